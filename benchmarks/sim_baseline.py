"""The baselines of benchmarks.baseline_server, simulated: one pipeline call at a time."""

from __future__ import annotations

from collections import deque

from benchmarks.sim_clock import Loop
from benchmarks.sim_engine import Finish, Server, SimRequest
from benchmarks.sim_profile import Profile


class BaselineServer(Server):
    """benchmarks.baseline_server: one pipeline call at a time, for a batch of requests whose
    parameters are equal but for prompt and seed (max_images 1: the sequential baseline)."""

    def __init__(self, loop: Loop, profile: Profile, on_done: Finish, max_images: int) -> None:
        super().__init__(loop, profile, on_done)
        self.max_images = max_images
        self.waiting: deque[SimRequest] = deque()
        self.busy = False
        self.batch_counts: dict[int, int] = {}  # requests per pipeline call -> calls

    def submit(self, request: SimRequest) -> None:
        self.waiting.append(request)
        if not self.busy:
            self.busy = True  # the worker task wakes after this instant's arrivals
            self.loop.at(self.loop.now, self._next_call)

    def _take_batch(self) -> list[SimRequest]:
        first = self.waiting.popleft()
        batch = [first]
        n = first.spec.request_class.n
        for request in list(self.waiting):
            if (len(batch) + 1) * n > self.max_images:
                break
            if batch_key(request) == batch_key(first):
                self.waiting.remove(request)
                batch.append(request)
        return batch

    def _next_call(self) -> None:
        if not self.waiting:
            self.busy = False
            return
        self.busy = True
        batch = self._take_batch()
        self.batch_counts[len(batch)] = self.batch_counts.get(len(batch), 0) + 1
        total_ms, first_step_ms = self.call_ms(batch)
        start = self.loop.now

        def done() -> None:
            share = first_step_ms / total_ms if total_ms else 1.0
            for request in batch:
                request.first_step = start + (self.loop.now - start) * share
                self.respond(request)
            self._next_call()

        self.loop.work(total_ms / 1000, done)

    def call_ms(self, batch: list[SimRequest]) -> tuple[float, float]:
        """One FluxPipeline.__call__: (its ms, ms to the end of its first denoising step)."""
        profile, shape = self.profile, batch[0].shape
        request_class = batch[0].spec.request_class
        images = len(batch) * request_class.n
        cfg = shape.num_rows  # real CFG: a second forward of the same rows
        prompts = len(batch) * cfg  # diffusers encodes every prompt, no cache
        encode = profile.encode_ms(images, prompts)
        step = cfg * profile.forward.ms(images, shape.tokens_per_row)
        step += profile.pipeline["per_step_ms"]
        decode = profile.decode_ms(images, shape.megapixels)
        fixed = profile.pipeline["fixed_ms"]
        steps = request_class.num_inference_steps
        return fixed + encode + steps * step + decode, fixed + encode + step


def batch_key(request: SimRequest) -> tuple:
    c = request.spec.request_class
    return (c.kind, c.width, c.height, c.num_frames, c.num_inference_steps, c.guidance_scale,
            c.true_cfg_scale, c.negative_prompt, c.n)  # fmt: skip
