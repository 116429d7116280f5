"""Step scheduler: which requests run the next denoising step, and together with whom.

CPU bookkeeping only. Every step it walks the live requests in the policy's order and gives each
a place in the forward of its denoiser (its batch key) while that forward's budget lasts:
`max_num_batched_tokens` (rows x padded sequence length, CFG rows included) and
`max_batch_size` rows. A waiting request that gets a place is admitted (sent to be encoded);
a running request that gets none sits this step out and keeps its latents (pre-emption). Under
`fcfs` every admitted request fits, so every running request takes part in every step.

Encoding and decoding are stages outside the forward: the scheduler hands requests to them
(`prepare`, `decode`) and learns from the runner's output when they are ready to denoise or done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from omni.errors import EngineOverloadedError
from omni.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_NUM_RUNNING,
    DEFAULT_MAX_NUM_WAITING,
    DEFAULT_MAX_STARVATION_STEPS,
    DEFAULT_SCHEDULING_POLICY,
    MAX_PADDING_RATIO,
)
from omni.request import Request, RequestStatus
from omni.scheduler.policy import POLICIES, ranked


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    max_num_batched_tokens: int | None = None  # None: only max_batch_size bounds a forward
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # rows in one forward; real CFG takes two
    max_num_running: int = DEFAULT_MAX_NUM_RUNNING  # requests holding latents at once
    max_num_waiting: int = DEFAULT_MAX_NUM_WAITING
    policy: str = DEFAULT_SCHEDULING_POLICY
    max_starvation_steps: int = DEFAULT_MAX_STARVATION_STEPS

    def __post_init__(self) -> None:
        names = ("max_batch_size", "max_num_running", "max_num_waiting", "max_starvation_steps")
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be at least 1")
        if self.policy not in POLICIES:
            raise ValueError(f"scheduling policy must be one of {', '.join(POLICIES)}")


@dataclass(slots=True)
class SchedulerOutput:
    step: int  # engine steps (forwards) scheduled before this one
    prepare: list[Request] = field(default_factory=list)  # admitted now: encode, make latents
    denoise: list[Request] = field(default_factory=list)  # one forward
    decode: list[Request] = field(default_factory=list)  # all steps done: decode

    @property
    def is_empty(self) -> bool:
        return not (self.prepare or self.denoise or self.decode)


@dataclass(slots=True)
class RunnerOutput:
    encoded: list[str] = field(default_factory=list)  # ready to denoise
    decoded: list[str] = field(default_factory=list)  # output set: finished
    failed: dict[str, str] = field(default_factory=dict)  # request_id -> error message
    previews: list[Any] = field(default_factory=list)  # partial images, for the engine to publish


@dataclass(slots=True)
class PadGroup:
    """Rows of one forward that the denoiser pads to one length: their count, the longest, and
    the tokens they really hold."""

    rows: int = 0
    longest_row: int = 0
    real_tokens: int = 0

    @property
    def padded(self) -> int:
        return self.rows * self.longest_row


@dataclass(slots=True)
class Forward:
    """The requests of one forward and its padded cost: rows x the longest row of each pad
    group (`Request.pad_group`: groups run as separate calls of the step, unpadded between)."""

    key: Hashable  # the denoiser every request in it runs
    requests: list[Request] = field(default_factory=list)
    rows: int = 0
    groups: dict[Hashable, PadGroup] = field(default_factory=dict)

    def misfit(self, request: Request, config: SchedulerConfig) -> str | None:
        """None if `request` fits; else "budget" (the forward is full) or "padding" (its size is
        too far from its group's: padding would waste more than MAX_PADDING_RATIO allows)."""
        if not self.requests:  # a request over the budget alone still runs, alone
            return None
        rows = self.rows + request.num_rows
        group = self.groups.get(request.pad_group, PadGroup())
        joined = PadGroup(
            group.rows + request.num_rows,
            max(group.longest_row, request.tokens_per_row),
            group.real_tokens + request.num_rows * request.tokens_per_row,
        )
        padded = sum(g.padded for g in self.groups.values()) - group.padded + joined.padded
        budget = config.max_num_batched_tokens
        if rows > config.max_batch_size or (budget is not None and padded > budget):
            return "budget"
        return "padding" if joined.padded > MAX_PADDING_RATIO * joined.real_tokens else None

    def add(self, request: Request) -> None:
        self.requests.append(request)
        self.rows += request.num_rows
        group = self.groups.setdefault(request.pad_group, PadGroup())
        group.rows += request.num_rows
        group.longest_row = max(group.longest_row, request.tokens_per_row)
        group.real_tokens += request.num_rows * request.tokens_per_row


def place(request: Request, forwards: list[Forward], config: SchedulerConfig) -> bool:
    """Put `request` in the first forward of its denoiser it fits, or in a new one when it fits
    none only because of its size; False when the forwards it could share are full."""
    misfits = set()
    for forward in forwards:
        if forward.key == request.batch_key:
            misfit = forward.misfit(request, config)
            if misfit is None:
                forward.add(request)
                return True
            misfits.add(misfit)
    if "budget" in misfits:
        return False
    forwards.append(Forward(request.batch_key))
    forwards[-1].add(request)
    return True


class Scheduler:
    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.policy = POLICIES[config.policy]
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_steps = 0  # forwards scheduled so far: the clock of starvation and arrival
        self._live: dict[str, Request] = {}
        self._to_decode: list[Request] = []

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
        for request in requests:
            request.arrival_step = request.last_progress_step = self.num_steps
            self._live[request.request_id] = request
        self.waiting.extend(requests)

    def abort(self, request_id: str) -> Request | None:
        request = self._live.pop(request_id, None)
        if request is None:
            return None
        if request.status == RequestStatus.WAITING:
            self.waiting.remove(request)
        else:
            self.running.remove(request)
        if request in self._to_decode:
            self._to_decode.remove(request)
        request.status = RequestStatus.ABORTED
        request.finish_time = time.monotonic()
        return request

    def schedule(self) -> SchedulerOutput:
        output = SchedulerOutput(step=self.num_steps, decode=self._to_decode)
        self._to_decode = []
        order = ranked(
            [*self.running, *self.waiting],
            self.policy,
            self.num_steps,
            self.config.max_starvation_steps,
        )
        output.prepare = self._admit(order)
        ready = [r for r in order if r.status == RequestStatus.DENOISING]
        if ready:
            output.denoise = self._pick_batch(ready)
            self.num_steps += 1
            now = time.monotonic()
            for request in output.denoise:
                request.last_progress_step = self.num_steps
                request.first_step_time = request.first_step_time or now
        return output

    def _admit(self, order: list[Request]) -> list[Request]:
        """Waiting requests that get a place in a forward, in the policy's order."""
        forwards: list[Forward] = []
        admitted: list[Request] = []
        num_running = len(self.running)
        for request in order:
            if request.status == RequestStatus.DECODING:
                continue
            is_waiting = request.status == RequestStatus.WAITING
            if is_waiting and num_running >= self.config.max_num_running:
                continue
            if place(request, forwards, self.config) and is_waiting:
                request.status = RequestStatus.ENCODING
                request.last_progress_step = self.num_steps
                admitted.append(request)
                num_running += 1
        if admitted:
            self.running.extend(admitted)
            self.waiting = deque(r for r in self.waiting if r.status == RequestStatus.WAITING)
        return admitted

    def _pick_batch(self, ready: list[Request]) -> list[Request]:
        """One forward. Under fcfs the one holding the request that ran longest ago, so
        denoisers and sizes that cannot share take turns; otherwise the best-ranked one."""
        forwards: list[Forward] = []
        for request in ready:
            place(request, forwards, self.config)
        if self.config.policy == "fcfs":
            return min(
                forwards, key=lambda f: min(r.last_progress_step for r in f.requests)
            ).requests
        return forwards[0].requests

    def update(self, output: SchedulerOutput, runner_output: RunnerOutput) -> list[Request]:
        """Apply one executed step and finished stages; returns the requests that left."""
        failed = runner_output.failed
        for request_id in runner_output.encoded:
            request = self._live.get(request_id)
            if request is not None and request.status == RequestStatus.ENCODING:
                request.status = RequestStatus.DENOISING
        for request in output.denoise:
            if request.status == RequestStatus.DENOISING and request.request_id not in failed:
                request.step_index += 1
                if request.is_denoised:
                    request.status = RequestStatus.DECODING
                    self._to_decode.append(request)
        for request_id in runner_output.decoded:
            request = self._live.get(request_id)
            if request is not None and request.status == RequestStatus.DECODING:
                request.status = RequestStatus.FINISHED
        for request_id, error in failed.items():
            request = self._live.get(request_id)
            if request is not None and not request.status.is_finished:
                request.status = RequestStatus.FAILED
                request.error = error
        return self._remove_finished()

    def _remove_finished(self) -> list[Request]:
        done = [r for r in self.running if r.status.is_finished]
        if not done:
            return done
        now = time.monotonic()
        self.running = [r for r in self.running if not r.status.is_finished]
        self._to_decode = [r for r in self._to_decode if not r.status.is_finished]
        for request in done:
            request.finish_time = now
            del self._live[request.request_id]
        return done

    def fail_all(self) -> list[Request]:
        """Every live request, removed: the engine is stopping."""
        requests = [*self.waiting, *self.running]
        self.waiting.clear()
        self.running.clear()
        self._live.clear()
        self._to_decode.clear()
        return requests
