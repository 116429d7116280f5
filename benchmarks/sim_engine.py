"""Discrete-event simulation of omni's server: Engine's loop around the REAL Scheduler, the
encode and decode workers of omni.engine.stages beside it, and the HTTP answers, on the
simulated clock of benchmarks.sim_clock. The baselines are in benchmarks.sim_baseline."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.sim_clock import Loop
from benchmarks.sim_profile import Profile, Shape
from benchmarks.workload import RequestSpec
from omni.engine.stages import (
    DECODE_WINDOW_S,
    MAX_DECODE_BATCH,
    MAX_DECODE_PIXELS,
    MAX_ENCODE_BATCH,
)
from omni.errors import EngineOverloadedError
from omni.request import GenerationParams, Request, RequestStatus
from omni.scheduler import RunnerOutput, Scheduler, SchedulerConfig, SchedulerOutput


@dataclass(eq=False, slots=True)
class SimRequest:
    """One HTTP request and its simulated timeline (seconds on the simulated clock)."""

    spec: RequestSpec
    shape: Shape
    send: float
    images_left: int = 0
    first_step: float | None = None
    server_done: float | None = None
    end: float | None = None
    status: int = 200
    error: str | None = None


Finish = Callable[[SimRequest], None]


class Server:
    """What the load generator talks to."""

    def __init__(self, loop: Loop, profile: Profile, on_done: Finish) -> None:
        self.loop = loop
        self.profile = profile
        self.on_done = on_done

    def submit(self, request: SimRequest) -> None:
        raise NotImplementedError

    def respond(self, request: SimRequest) -> None:
        """Server-side done: PNG encoding and the HTTP answer, then the client has it. omni
        encodes the PNGs in a worker thread (`asyncio.to_thread` in omni.http.images), so on a
        shared CPU that is work of its own beside the engine, as many at once as are ready;
        the rest of the measured HTTP overhead (request parsing, JSON, socket, the client's
        side, thread hand-offs) is per-request latency that the event loops of server and
        client interleave across requests: a delay, not a serial queue. With host cores to
        spare the whole answer is a delay."""
        request.server_done = self.loop.now
        megapixels = request.shape.megapixels * request.spec.request_class.n
        response = self.profile.response
        if not self.profile.response_shares_capacity:
            seconds = self.profile.response_ms(megapixels) / 1000
            self.loop.at(self.loop.now + seconds * self.loop.pool.slowdown,
                         lambda: self._received(request))  # fmt: skip
            return
        png_s = response["per_megapixel_ms"] * megapixels / 1000
        http_s = response["fixed_ms"] / 1000 * self.loop.pool.slowdown

        def encoded() -> None:
            self.loop.at(self.loop.now + http_s, lambda: self._received(request))

        self.loop.work(png_s, encoded)

    def _received(self, request: SimRequest) -> None:
        request.end = self.loop.now
        self.on_done(request)

    def reject(self, request: SimRequest, status: int, error: str) -> None:
        request.status, request.error = status, error
        request.server_done = request.end = self.loop.now
        self.on_done(request)


class OmniServer(Server):
    """omni.engine.Engine's loop with ThreadStages: schedule, execute, update, in sim time."""

    def __init__(
        self, loop: Loop, profile: Profile, on_done: Finish, config: SchedulerConfig
    ) -> None:
        super().__init__(loop, profile, on_done)
        self.scheduler = Scheduler(config)
        self.inbox: list[tuple[SimRequest, list[Request]]] = []
        self.busy = False  # a forward is running
        self.waking = False
        self.owner: dict[str, SimRequest] = {}
        self.encoded: list[str] = []
        self.decoded: list[str] = []
        self.prompts_seen: set[str] = set()
        self.encodes: deque[Request] = deque()
        self.encoding = False
        self.decodes: deque[tuple[Request, float]] = deque()
        self.decoding = False
        self.decode_timer: float | None = None
        self.batch_counts: dict[int, int] = {}  # requests per forward -> forwards
        self._ids = itertools.count()

    def submit(self, request: SimRequest) -> None:
        spec, shape = request.spec, request.shape
        params = GenerationParams(prompt=spec.prompt)
        images = []
        for _ in range(spec.request_class.n):
            request_id = f"r{next(self._ids)}"
            self.owner[request_id] = request
            images.append(
                Request(request_id, params, shape.step_keys, shape.num_rows, shape.tokens_per_row)
            )
        request.images_left = len(images)
        self.inbox.append((request, images))
        self._notify()

    def _notify(self) -> None:
        """Wake an idle engine, after everything else due at this instant (as its thread
        would wake after the event loop queued every request that arrived together)."""
        if not self.busy and not self.waking:
            self.waking = True
            self.loop.at(self.loop.now, self._wake)

    def _wake(self) -> None:
        self.waking = False
        if self.busy:
            return
        self._drain_inbox()
        self._step()

    def _drain_inbox(self) -> None:
        inbox, self.inbox = self.inbox, []
        for request, images in inbox:
            try:
                self.scheduler.add(*images)
            except EngineOverloadedError as exc:
                for image in images:
                    del self.owner[image.request_id]
                self.reject(request, 503, str(exc))

    def _step(self) -> None:
        """Engine.step() until it has nothing to do, or until a forward is running."""
        while self.scheduler.has_work:
            output = self.scheduler.schedule()
            if output.is_empty and not (self.encoded or self.decoded):
                break
            self._submit_stages(output)
            if output.denoise:
                self.busy = True
                self.loop.work(self._forward_s(output), lambda out=output: self._finish(out))
                return
            self._update(output)
            self._drain_inbox()
        self.busy = False

    def _forward_s(self, output: SchedulerOutput) -> float:
        now = self.loop.now
        for request in output.denoise:
            if request.step_index == 0:
                owner = self.owner[request.request_id]
                owner.first_step = max(owner.first_step or now, now)
        size = len(output.denoise)
        self.batch_counts[size] = self.batch_counts.get(size, 0) + 1
        rows = sum(r.num_rows for r in output.denoise)
        tokens = {r.tokens_per_row for r in output.denoise}
        forward_ms = self.profile.forward.ms(rows, max(tokens), mixed=len(tokens) > 1)
        return (forward_ms + self.profile.step_overhead_ms) / 1000

    def _finish(self, output: SchedulerOutput) -> None:
        self._update(output)
        self._drain_inbox()
        self._step()

    def _update(self, output: SchedulerOutput) -> None:
        encoded, decoded = self.encoded, self.decoded
        self.encoded, self.decoded = [], []
        for request in self.scheduler.update(output, RunnerOutput(encoded, decoded)):
            owner = self.owner.pop(request.request_id)
            if request.status != RequestStatus.FINISHED:
                self.reject(owner, 500, request.error or "failed")
                continue
            owner.images_left -= 1
            if owner.images_left == 0:
                self.respond(owner)

    def _submit_stages(self, output: SchedulerOutput) -> None:
        self.encodes.extend(output.prepare)
        now = self.loop.now
        self.decodes.extend((request, now) for request in output.decode)
        self._next_encode()
        self._next_decode()

    def _next_encode(self) -> None:
        if self.encoding or not self.encodes:
            return
        count = min(MAX_ENCODE_BATCH, len(self.encodes))
        batch = [self.encodes.popleft() for _ in range(count)]
        new = {r.params.prompt for r in batch} - self.prompts_seen
        self.prompts_seen |= new
        self.encoding = True

        def done() -> None:
            self.encoding = False
            self.encoded.extend(r.request_id for r in batch)
            self._next_encode()
            self._notify()

        self.loop.work(self.profile.encode_ms(len(batch), len(new)) / 1000, done)

    def _shape_of(self, request: Request) -> Shape:
        return self.owner[request.request_id].shape

    def _next_decode(self) -> None:
        """ThreadStages._next_job for decodes: a full batch now, else after the window."""
        if self.decoding or not self.decodes:
            return
        head, queued_at = self.decodes[0]
        key = self._shape_of(head).output_key
        same = sum(1 for r, _ in self.decodes if self._shape_of(r).output_key == key)
        wake_at = queued_at + DECODE_WINDOW_S
        if same < MAX_DECODE_BATCH and self.loop.now < wake_at:
            if self.decode_timer != wake_at:
                self.decode_timer = wake_at
                self.loop.at(wake_at, self._next_decode)
            return
        batch, pixels = [], 0.0
        for request, _ in self.decodes:
            shape = self._shape_of(request)
            if shape.output_key != key or len(batch) >= MAX_DECODE_BATCH:
                continue
            if batch and pixels + shape.megapixels * 1e6 > MAX_DECODE_PIXELS:
                break
            batch.append(request)
            pixels += shape.megapixels * 1e6
        taken = {id(r) for r in batch}
        self.decodes = deque(item for item in self.decodes if id(item[0]) not in taken)
        self.decoding = True

        def done() -> None:
            self.decoding = False
            self.decoded.extend(r.request_id for r in batch)
            self._next_decode()
            self._notify()

        megapixels = self._shape_of(head).megapixels
        self.loop.work(self.profile.decode_ms(len(batch), megapixels) / 1000, done)
