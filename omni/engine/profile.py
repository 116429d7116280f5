"""A short profile of the loaded model's forward at start-up: ms per step against batch size.

The default `max_num_batched_tokens` is the knee of that curve: the smallest batch that reaches
`KNEE_SHARE` of the best throughput measured. Past the knee a bigger batch only stretches every
request's step time; before it, rows are nearly free. Measured against the best point rather
than point to point, one slow sample on a busy machine moves the knee by one point at most.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch
from PIL import Image

from omni.engine.stages import InlineStages
from omni.models.base import FamilyAdapter
from omni.request import GenerationParams, Request

logger = logging.getLogger(__name__)

KNEE_SHARE = 0.9
REPEATS = 5


@dataclass(frozen=True, slots=True)
class ForwardProfile:
    width: int
    height: int
    num_frames: int | None
    tokens_per_row: int
    points: tuple[tuple[int, float], ...]  # (rows, ms per forward)
    knee_rows: int | None  # None: too few points measured to find a knee

    @property
    def max_num_batched_tokens(self) -> int | None:
        return None if self.knee_rows is None else self.knee_rows * self.tokens_per_row

    def describe(self) -> str:
        curve = ", ".join(f"{rows}: {ms:.1f} ms" for rows, ms in self.points)
        size = f"{self.width}x{self.height}" + (f"x{self.num_frames}" if self.num_frames else "")
        if self.knee_rows is None:
            return f"forward at {size}: {curve}; too few points for a knee"
        return (
            f"forward at {size} ({self.tokens_per_row} tokens a row): {curve}; knee at "
            f"{self.knee_rows} rows = {self.max_num_batched_tokens} tokens a forward"
        )


def knee(points: list[tuple[int, float]]) -> int | None:
    """The fewest rows whose throughput reaches KNEE_SHARE of the best measured."""
    if len(points) < 3:
        return None
    best = max(rows / ms for rows, ms in points)
    return next(rows for rows, ms in points if rows / ms >= KNEE_SHARE * best)


def profile_forward(
    adapter: FamilyAdapter, max_batch_size: int, time_limit_s: float
) -> ForwardProfile:
    """Time `predict` on 1, 2, 4, ... copies of a default request, within `time_limit_s`."""
    info = adapter.info
    image = (
        Image.new("RGB", (info.default_width, info.default_height)) if info.takes_image else None
    )
    prompt = "a lighthouse on a rocky island"
    params = adapter.resolve(GenerationParams(prompt=prompt, seed=0, image=image))
    step_keys, num_rows = adapter.plan(params)
    tokens = adapter.tokens_per_row(params)
    base = Request("profile", params, step_keys, num_rows, tokens)
    points: list[tuple[int, float]] = []
    deadline = time.monotonic() + time_limit_s
    with torch.inference_mode():
        InlineStages(adapter).encode([base])
        rows = 1
        while rows <= max_batch_size:
            requests = [replace(base, request_id=f"profile-{i}") for i in range(rows)]
            ms = time_predict(adapter, requests, deadline - time.monotonic())
            points.append((rows, ms))
            # The next point doubles the rows: at least two calls of about twice this.
            if time.monotonic() + 4 * ms / 1000 > deadline:
                break
            rows *= 2
    return ForwardProfile(
        params.width, params.height, params.num_frames, tokens, tuple(points), knee(points)
    )


def time_predict(adapter: FamilyAdapter, requests: list[Request], budget_s: float) -> float:
    """The fastest of up to REPEATS calls of `predict` after a warm-up (fewer when one call
    takes more than a REPEATS-th of `budget_s`): on a shared machine other work only ever adds
    time, so the minimum is the forward's own cost."""
    times: list[float] = []
    spent = 0.0
    for call in range(1 + REPEATS):
        synchronize(adapter.device)
        start = time.perf_counter()
        adapter.predict(requests)
        synchronize(adapter.device)
        elapsed = time.perf_counter() - start
        spent += elapsed
        if call > 0:
            times.append(elapsed * 1000)
            if spent * REPEATS > budget_s * call:
                break
    return min(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
