"""Measure a simulator profile (benchmarks/sim_profile.py) of a model on this device.

Everything goes through omni's own adapter: the forward is `adapter.predict` plus the sampler's
update (what the runner does each step), encode is the stage's `encode` (text cache included),
decode the adapter's `decode`, a response is omni's PNG encoding plus the HTTP overhead that a real
`omni.serve` shows one request at a time (client latency less the server's x-inference-time-s),
and a pipeline call is the baseline server's diffusers pipeline. Each figure is a
median of repeated calls: the machine may be shared, and the servers run on it shared too.
"""

from __future__ import annotations

import base64
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from benchmarks.scheduler_cost import scheduler_step_seconds
from benchmarks.sim_profile import FORMAT, leave_one_out_error
from omni.config import EngineConfig
from omni.engine.runner import advance
from omni.engine.stages import InlineStages
from omni.http.encoding import encode_image
from omni.models import load_model
from omni.request import GenerationParams, Request

PROMPT = "a lighthouse on a rocky island at dusk"
NOTES = (
    "Measured by benchmarks.sim_measure through omni's own adapter, stages and server; medians, "
    "forward points timed round-robin. The machine may be shared: every figure carries its load "
    "at the time. capacity: two threads' work per second over one thread's (clamped to 1). "
    "slowdown: solved so the simulator matches a real omni.serve's images/s at 8 clients on "
    "the default size (server_measured); it absorbs what the model leaves out (event-loop work "
    "per step, the load generator's CPU, other tenants)."
)


def median_ms(call: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def least_squares(rows: Sequence[Sequence[float]], target: Sequence[float]) -> list[float]:
    solution = np.linalg.lstsq(np.array(rows, dtype=float), np.array(target), rcond=None)[0]
    return [max(0.0, float(v)) for v in solution]


class Measurer:
    def __init__(self, model: str, repeats: int) -> None:
        self.model = model
        self.repeats = repeats
        self.adapter = load_model(EngineConfig(model=model, device="cpu", profile_seconds=0))
        self.stages = InlineStages(self.adapter)
        self._ids = 0

    def requests(self, side: int, count: int, prompt: str = PROMPT, steps: int = 28) -> list:
        made = []
        for index in range(count):
            self._ids += 1
            params = GenerationParams(
                prompt=prompt if prompt else f"prompt number {self._ids}",
                width=side,
                height=side,
                num_inference_steps=steps,
                seed=index,
            )
            params = self.adapter.resolve(params)
            keys, rows = self.adapter.plan(params)
            tokens = self.adapter.tokens_per_row(params)
            made.append(Request(f"m{self._ids}", params, keys, rows, tokens))
        return made

    def step(self, requests: list[Request]) -> None:
        with torch.inference_mode():
            advance(requests, self.adapter.predict(requests))

    def forward_points(self, sides: Sequence[int], rows: Sequence[int]) -> list[list]:
        """Median ms of each (side, rows) point, the points timed in turn, round after round,
        so that a burst of other work on a shared machine spreads over all of them."""
        batches = []
        for side in sides:
            base = self.requests(side, max(rows))
            self.stages.encode(base)
            batches += [base[:count] for count in rows]
        for batch in batches:
            self.step(batch)  # warm-up
        times: list[list[float]] = [[] for _ in batches]
        for _ in range(self.repeats):
            for batch, samples in zip(batches, times, strict=True):
                start = time.perf_counter()
                self.step(batch)
                samples.append((time.perf_counter() - start) * 1000)
        return [
            [len(batch), batch[0].tokens_per_row, round(statistics.median(samples), 4)]
            for batch, samples in zip(batches, times, strict=True)
        ]

    def mixed_size_factor(self, small: int, large: int, count: int) -> float:
        """A forward of rows of two sizes against one of as many rows, all of the larger."""
        mixed = self.requests(small, count // 2) + self.requests(large, count - count // 2)
        uniform = self.requests(large, count)
        self.stages.encode(mixed + uniform)
        mixed_ms = median_ms(lambda: self.step(mixed), self.repeats)
        return mixed_ms / median_ms(lambda: self.step(uniform), self.repeats)

    def encode_costs(self) -> dict[str, float]:
        self.stages.encode(self.requests(64, 1))  # the prompt is cached from here on
        counts = (1, 8, 32)
        hits = [median_ms(lambda n=n: self.stages.encode(self.requests(64, n)), self.repeats)
                for n in counts]  # fmt: skip
        fixed, per_request = least_squares([[1, n] for n in counts], hits)
        misses = [
            median_ms(lambda n=n: self.stages.encode(self.requests(64, n, prompt="")), 5)
            for n in (1, 8)
        ]
        per_prompt = max(0.0, (misses[1] - misses[0]) / 7 - per_request)
        text_call = max(0.0, misses[0] - hits[0] - per_prompt)
        return {"fixed_ms": fixed, "per_request_ms": per_request, "per_text_call_ms": text_call,
                "per_prompt_ms": per_prompt}  # fmt: skip

    def decode_costs(self, sides: Sequence[int]) -> tuple[dict[str, float], list]:
        rows, target, images = [], [], {}
        for side in sides:
            for count in (1, 4, 16):
                batch = self.requests(side, count)
                self.stages.encode(batch)
                latents = [r.latents for r in batch]

                def decode(batch=batch, latents=latents, side=side) -> None:
                    for request, tensor in zip(batch, latents, strict=True):
                        request.latents = tensor
                    with torch.inference_mode():
                        images[side] = self.adapter.decode(batch)[0]

                ms = median_ms(decode, self.repeats)
                rows.append([1, count, count * side * side / 1e6])
                target.append(ms)
        fixed, per_output, per_mp = least_squares(rows, target)
        return (
            {"fixed_ms": fixed, "per_output_ms": per_output, "per_megapixel_ms": per_mp},
            [images[s] for s in sides],
        )

    def pipeline_costs(self, side: int, forward: Callable[[int, int], float], encode, decode):
        """FluxPipeline.__call__ as the baseline calls it, less the parts the model has."""
        from benchmarks.baseline_server import load_pipeline

        pipe, _, _ = load_pipeline(self.model, "cpu", "auto")
        tokens = self.requests(side, 1)[0].tokens_per_row
        rows, residual = [], []
        for batch, steps in ((1, 1), (1, 6), (4, 1), (4, 6)):
            prompts = [f"{PROMPT} {i}" for i in range(batch)]

            def call(prompts=prompts, steps=steps) -> None:
                pipe(prompt=prompts, width=side, height=side, num_inference_steps=steps,
                     guidance_scale=3.5, max_sequence_length=64)  # fmt: skip

            measured = median_ms(call, max(3, self.repeats // 2))
            modelled = encode(batch, batch) + steps * forward(batch, tokens) + decode(batch, side)
            rows.append([1, steps])
            residual.append(measured - modelled)
        fixed, per_step = least_squares(rows, residual)
        return {"fixed_ms": fixed, "per_step_ms": per_step}


def png_costs(images: Sequence, repeats: int) -> tuple[float, list]:
    """omni's PNG encoding (and base64) per megapixel, from outputs of a few sizes."""
    rows, target, details = [], [], []
    for image in images:
        ms = median_ms(lambda i=image: base64.b64encode(encode_image(i, "png")), repeats)
        rows.append([image.width * image.height / 1e6])
        target.append(ms)
        details.append({"side": image.width, "png_ms": round(ms, 4)})
    return least_squares(rows, target)[0], details


def cpu_capacity(work_a: Callable[[], object], work_b: Callable[[], object], seconds: float):
    """Work done per second by two threads at once, in units of one thread alone: 2 when they
    run fully in parallel, 1 when they take turns (one interpreter lock, one free core)."""

    def calls_per_s(work: Callable[[], object], stop: threading.Event, out: list) -> None:
        count, start = 0, time.perf_counter()
        while not stop.is_set():
            work()
            count += 1
        out.append(count / (time.perf_counter() - start))

    def run(works: Sequence[Callable[[], object]]) -> list[float]:
        stop, outs = threading.Event(), [[] for _ in works]
        threads = [threading.Thread(target=calls_per_s, args=(w, stop, o))
                   for w, o in zip(works, outs, strict=True)]  # fmt: skip
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        return [o[0] for o in outs]

    (alone_a,) = run([work_a])
    (alone_b,) = run([work_b])
    together_a, together_b = run([work_a, work_b])
    return together_a / alone_a + together_b / alone_b


def measure_profile(model: str, sides: Sequence[int], rows: Sequence[int], repeats: int) -> dict:
    started = time.perf_counter()
    m = Measurer(model, repeats)
    points = m.forward_points(sides, rows)
    kinds = {kind: leave_one_out_error(points, kind) for kind in ("interpolate", "linear")}
    encode = m.encode_costs()
    decode, images = m.decode_costs(sides)
    png_per_mp, png_details = png_costs(images, repeats)
    side = m.adapter.info.default_width
    from benchmarks.sim_calibrate import calibrate_slowdown, measure_server

    server = measure_server(model, side)
    http_ms = server["http_overhead_ms_at_c1"]
    response = {"fixed_ms": max(0.0, http_ms - png_per_mp * side * side / 1e6),
                "per_megapixel_ms": png_per_mp}  # fmt: skip
    profile = {
        "format": FORMAT,
        "name": f"cpu-{model}",
        "device": f"CPU ({torch.get_num_threads()} torch threads)",
        "model": model,
        "tokens": {
            "px_per_token": 16,
            "text_tokens": m.adapter.max_sequence_length,
            "shared_forward": True,
        },
        "default_size": [m.adapter.info.default_width, m.adapter.info.default_height],
        "forward": {
            "model": min(kinds, key=kinds.get),
            "leave_one_out_error": kinds,
            "points": points,
            "mixed_size_factor": m.mixed_size_factor(min(sides), max(sides), 8),
        },
        "step_overhead_ms": scheduler_step_seconds(16, 20) * 1000,
        "encode": encode,
        "decode": decode,
        "response": response,
        "response_measured": {"png": png_details},
        "server_measured": server,
    }
    from benchmarks.sim_profile import parse_profile

    model_now = parse_profile({**profile, "pipeline": {"fixed_ms": 0, "per_step_ms": 0}})
    profile["pipeline"] = m.pipeline_costs(
        profile["default_size"][0],
        lambda r, t: model_now.forward.ms(r, t),
        model_now.encode_ms,
        lambda n, side: model_now.decode_ms(n, side * side / 1e6),
    )
    uniform = m.requests(max(sides), 8)
    m.stages.encode(uniform)
    decode_batch = m.requests(max(sides), 4)
    m.stages.encode(decode_batch)
    latents = [r.latents for r in decode_batch]

    def decode_once() -> None:
        for request, tensor in zip(decode_batch, latents, strict=True):
            request.latents = tensor
        with torch.inference_mode():
            m.adapter.decode(decode_batch)

    # Other jobs on a shared machine can push the figure below 1: that slowdown is already in
    # every measured cost, so it is not counted twice.
    capacity = cpu_capacity(lambda: m.step(uniform), decode_once, 2.0)
    profile["capacity_measured"] = capacity
    profile["capacity"] = max(1.0, capacity)
    profile["response_shares_capacity"] = True
    profile["slowdown"] = calibrate_slowdown(profile, server, side)
    profile["measured_in_s"] = round(time.perf_counter() - started, 1)
    profile["notes"] = NOTES + f" 1-minute load average at the end: {os.getloadavg()[0]:.1f}."
    return profile
