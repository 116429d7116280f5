"""Runs one scheduled step: hands out encodes and decodes, runs the forward, moves the latents."""

from __future__ import annotations

import torch

from omni.engine.stages import InlineStages, ThreadStages, run_guarded
from omni.flow import euler_steps
from omni.models.base import FamilyAdapter
from omni.request import Request
from omni.scheduler import RunnerOutput, SchedulerOutput


def advance(requests: list[Request], velocities: list[torch.Tensor]) -> None:
    """The sampler's update for the whole batch at once: one Euler step for every request."""
    sizes = [r.step_sizes[r.step_index] for r in requests]
    moved = euler_steps([r.latents for r in requests], velocities, sizes)
    for request, latents in zip(requests, moved, strict=True):
        request.latents = latents


class Runner:
    def __init__(self, adapter: FamilyAdapter, stages: InlineStages | ThreadStages) -> None:
        self.adapter = adapter
        self.stages = stages

    def execute(self, output: SchedulerOutput) -> RunnerOutput:
        if output.prepare:
            self.stages.submit_encode(output.prepare)
        if output.decode:
            self.stages.submit_decode(output.decode)
        failed: dict[str, str] = {}
        with torch.inference_mode():
            run_guarded(self._denoise, output.denoise, failed)
        results = self.stages.collect()
        results.failed.update(failed)
        return RunnerOutput(results.encoded, results.decoded, results.failed)

    def has_results(self) -> bool:
        """Stage work finished since the last step: worth a step even with nothing to denoise."""
        return self.stages.has_results()

    def release(self, request_ids: list[str]) -> None:
        """Requests that left the engine outside a step (aborted); a single rank needs no word."""

    def close(self) -> None:
        self.stages.close()

    def _denoise(self, requests: list[Request]) -> None:
        advance(requests, self.adapter.predict(requests))
