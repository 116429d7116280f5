"""Runs one scheduled step: requests in, tensors through the adapter, each request updated."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from omni.flow import euler_step
from omni.models.base import FamilyAdapter
from omni.request import Request
from omni.scheduler import RunnerOutput, SchedulerOutput

logger = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class Runner:
    def __init__(self, adapter: FamilyAdapter) -> None:
        self.adapter = adapter

    def execute(self, output: SchedulerOutput) -> RunnerOutput:
        failed: dict[str, str] = {}
        with torch.inference_mode():
            self._guarded(self.adapter.prepare, output.prepare, failed)
            batch = [r for r in output.denoise if r.request_id not in failed]
            self._guarded(self._denoise, batch, failed)
            for group in group_by_shape(output.decode):
                self._guarded(self._decode, group, failed)
        return RunnerOutput(failed=failed)

    def release(self, request_ids: list[str]) -> None:
        """Requests that left the engine outside a step (aborted); a single rank needs no word."""

    def close(self) -> None:
        """Stop whatever the runner started."""

    def _denoise(self, requests: list[Request]) -> None:
        velocities = self.adapter.predict(requests)
        for request, velocity in zip(requests, velocities, strict=True):
            index = request.step_index
            request.latents = euler_step(
                request.latents, velocity, request.sigmas[index], request.sigmas[index + 1]
            )

    def _decode(self, requests: list[Request]) -> None:
        outputs = self.adapter.decode(requests)
        for request, result in zip(requests, outputs, strict=True):
            request.output = result
            request.latents = request.cond = None

    def _guarded(
        self,
        stage: Callable[[list[Request]], None],
        requests: list[Request],
        failed: dict[str, str],
    ) -> None:
        """Run a stage; a fault fails only these requests, and out-of-memory halves and retries."""
        if not requests:
            return
        try:
            stage(requests)
        except Exception as exc:
            if is_out_of_memory(exc) and len(requests) > 1:
                logger.warning("out of memory on %d requests: splitting", len(requests))
                empty_device_cache()
                half = len(requests) // 2
                self._guarded(stage, requests[:half], failed)
                self._guarded(stage, requests[half:], failed)
                return
            logger.exception("%s failed for %d request(s)", stage.__name__, len(requests))
            message = f"{type(exc).__name__}: {exc}"
            for request in requests:
                failed[request.request_id] = message


def group_by_shape(requests: list[Request]) -> list[list[Request]]:
    groups: dict[object, list[Request]] = {}
    for request in requests:
        key = (request.step_keys[-1], tuple(request.latents.shape))
        groups.setdefault(key, []).append(request)
    return list(groups.values())


def empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
