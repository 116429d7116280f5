"""Step scheduler: which requests run the next denoising step, and together with whom.

CPU bookkeeping only. Every step it admits waiting requests (they run their first step in the
very next batch), picks one group of requests that may share a forward pass, and moves each
request's progress on from what the runner reports.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from omni.errors import EngineOverloadedError
from omni.request import Request, RequestStatus


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_batch_size: int = 8  # rows in one forward; a request with real CFG takes two
    max_num_running: int = 64  # requests holding latents at once
    max_num_waiting: int = 256

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_num_running", "max_num_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


@dataclass(slots=True)
class SchedulerOutput:
    step: int
    prepare: list[Request] = field(default_factory=list)  # admitted now: encode, make latents
    denoise: list[Request] = field(default_factory=list)  # one group: one forward
    decode: list[Request] = field(default_factory=list)  # all steps done: decode

    @property
    def is_empty(self) -> bool:
        return not (self.prepare or self.denoise or self.decode)

    @property
    def requests(self) -> list[Request]:
        seen = {id(r): r for r in (*self.prepare, *self.denoise, *self.decode)}
        return list(seen.values())


@dataclass(slots=True)
class RunnerOutput:
    failed: dict[str, str] = field(default_factory=dict)  # request_id -> error message


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_steps_scheduled = 0
        self._group_last_served: dict[Hashable, int] = {}

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, *requests: Request) -> None:
        """Queue `requests` together: all of them, or none if the queue cannot hold them all.

        Requests that free running slots will admit at the next step do not count as waiting.
        """
        free_slots = max(0, self.config.max_num_running - len(self.running))
        if len(self.waiting) + len(requests) - free_slots > self.config.max_num_waiting:
            raise EngineOverloadedError("the waiting queue is full")
        self.waiting.extend(requests)

    def abort(self, request_id: str) -> Request | None:
        for queue in (self.waiting, self.running):
            for request in queue:
                if request.request_id == request_id:
                    queue.remove(request)
                    request.status = RequestStatus.ABORTED
                    request.finish_time = time.monotonic()
                    return request
        return None

    def schedule(self) -> SchedulerOutput:
        step = self.num_steps_scheduled
        self.num_steps_scheduled += 1
        output = SchedulerOutput(step=step)
        while self.waiting and len(self.running) < self.config.max_num_running:
            request = self.waiting.popleft()
            request.status = RequestStatus.ENCODING
            self.running.append(request)
            output.prepare.append(request)
        output.decode = [r for r in self.running if r.status == RequestStatus.DECODING]
        output.denoise = self._pick_batch()
        now = time.monotonic()
        for request in output.denoise:
            request.last_scheduled = step
            request.first_step_time = request.first_step_time or now
        if output.denoise:
            self._group_last_served[output.denoise[0].batch_key] = step
        return output

    def _pick_batch(self) -> list[Request]:
        groups: dict[Hashable, list[Request]] = {}
        for request in self.running:
            if request.status in (RequestStatus.ENCODING, RequestStatus.DENOISING):
                groups.setdefault(request.batch_key, []).append(request)
        if not groups:
            return []
        # Round robin over groups: the one served longest ago goes next, so none starves.
        key = min(
            groups,
            key=lambda k: (self._group_last_served.get(k, -1), groups[k][0].arrival_time),
        )
        # Within a group, new requests first, then whoever ran longest ago.
        members = sorted(groups[key], key=lambda r: (r.last_scheduled, r.arrival_time))
        batch: list[Request] = []
        rows = 0
        for request in members:
            if batch and rows + request.num_rows > self.config.max_batch_size:
                continue  # a one-row request further on may still fit
            batch.append(request)
            rows += request.num_rows
        return batch

    def update(self, output: SchedulerOutput, runner_output: RunnerOutput) -> list[Request]:
        """Apply one executed step; returns the requests that left the engine."""
        now = time.monotonic()
        done: list[Request] = []
        for request in output.requests:
            if request.status.is_finished:  # aborted while the step ran
                continue
            error = runner_output.failed.get(request.request_id)
            if error is not None:
                request.status = RequestStatus.FAILED
                request.error = error
            elif request.status == RequestStatus.DECODING and request in output.decode:
                request.status = RequestStatus.FINISHED
            elif request.status == RequestStatus.ENCODING:
                request.status = RequestStatus.DENOISING
        for request in output.denoise:
            if request.status == RequestStatus.DENOISING:
                request.step_index += 1
                if request.is_denoised:
                    request.status = RequestStatus.DECODING
        for request in output.requests:
            if request.status.is_finished and request in self.running:
                request.finish_time = now
                self.running.remove(request)
                done.append(request)
        self._forget_idle_groups()
        return done

    def _forget_idle_groups(self) -> None:
        live = {r.batch_key for r in self.running}
        for key in [k for k in self._group_last_served if k not in live]:
            del self._group_last_served[key]
