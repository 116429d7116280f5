"""Runs one scheduled step: hands out encodes and decodes, runs the forward, moves the latents."""

from __future__ import annotations

import torch

from omni.engine.guard import run_guarded
from omni.engine.partials import due_previews
from omni.engine.stages import InlineStages
from omni.models.base import FamilyAdapter
from omni.request import Request
from omni.scheduler import RunnerOutput, SchedulerOutput


def advance(requests: list[Request], outputs: list[torch.Tensor]) -> None:
    """Every request's sampler update: one batched update per sampler in the batch."""
    by_sampler: dict[int, tuple[list[Request], list[torch.Tensor]]] = {}
    for request, output in zip(requests, outputs, strict=True):
        group = by_sampler.setdefault(id(request.sampler), ([], []))
        group[0].append(request)
        group[1].append(output)
    for group, group_outputs in by_sampler.values():
        group[0].sampler.step(group, group_outputs)
    for request in requests:
        if request.blend is not None:  # per-request state such as inpainting's known region
            request.latents = request.blend(request)


class Runner:
    def __init__(self, adapter: FamilyAdapter, stages: InlineStages) -> None:
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
        return RunnerOutput(results.encoded, results.decoded, results.failed, results.previews)

    def has_results(self) -> bool:
        """Stage work finished since the last step: worth a step even with nothing to denoise."""
        return self.stages.has_results()

    def release(self, request_ids: list[str]) -> None:
        """Requests that left the engine outside a step (aborted); a single rank needs no word."""

    def close(self) -> None:
        self.stages.close()

    def _denoise(self, requests: list[Request]) -> None:
        outputs = self.adapter.predict(requests)
        previews = due_previews(requests, outputs)  # before the update moves the latents
        advance(requests, outputs)
        self.stages.submit_previews(previews)
