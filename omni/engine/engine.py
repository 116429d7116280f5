"""The engine actor: one thread owns the model and runs schedule -> execute -> update."""

from __future__ import annotations

import collections
import enum
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from omni.config import EngineConfig
from omni.engine.messages import (
    Abort,
    AddRequest,
    Event,
    Failed,
    Finished,
    Preview,
    Progress,
    Shutdown,
    Wakeup,
)
from omni.engine.observer import EngineObserver
from omni.engine.partials import DecodedPreview
from omni.engine.profile import profile_forward
from omni.engine.runner import Runner
from omni.engine.stage_threads import ThreadStages
from omni.engine.stages import InlineStages
from omni.engine.stats import EngineStats
from omni.errors import EngineNotReadyError, EngineOverloadedError, RequestAbortedError
from omni.models import FamilyAdapter, load_model
from omni.request import Request, RequestStatus
from omni.scheduler import Scheduler, SchedulerOutput

logger = logging.getLogger(__name__)

Inbox = AddRequest | Abort | Shutdown | Wakeup
NUM_STEP_RECORDS = 4096


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One engine step that ran a forward: when, and how big."""

    step: int
    start: float  # time.monotonic()
    end: float
    num_requests: int
    num_rows: int
    num_tokens: int  # rows x the longest row: what the budget counts


class Engine:
    """Owns the scheduler and the runner; talks to the world only through inbox and `publish`.

    `publish` receives each step's events as one list.
    """

    def __init__(
        self,
        config: EngineConfig,
        publish: Callable[[list[Event]], None],
        observer: EngineObserver | None = None,
    ) -> None:
        self.config = config
        self.publish = publish
        self.observer = observer or EngineObserver()
        self.inbox: queue.SimpleQueue[Inbox] = queue.SimpleQueue()
        self.scheduler = Scheduler(config.scheduler_config)
        self.stats = EngineStats(
            scheduling_policy=config.scheduling_policy,
            max_num_batched_tokens=config.max_num_batched_tokens,
        )
        self.step_records: collections.deque[StepRecord] = collections.deque(
            maxlen=NUM_STEP_RECORDS
        )
        self.state = EngineState.LOADING
        self.error: str | None = None
        self.adapter: FamilyAdapter | None = None
        self.runner: Runner | None = None
        self.loaded = threading.Event()
        self._thread = threading.Thread(target=self._main, name="omni-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, message: Inbox) -> None:
        self.inbox.put(message)

    def shutdown(self, timeout: float | None = None) -> None:
        self.inbox.put(Shutdown())
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self.adapter = load_model(self.config)
            self._set_budget(self.adapter)
            self.runner = self._make_runner(self.adapter)
            if self.state == EngineState.LOADING:  # a worker may already have died
                self.state = EngineState.READY
        except Exception as exc:
            logger.exception("loading %s failed", self.config.model)
            self._die(f"loading {self.config.model} failed: {exc}")
            return
        finally:
            self.loaded.set()
        try:
            idle = True
            while self._drain_inbox(block=idle):
                idle = not self.step()
            self._die("the engine has been stopped")
        except BaseException as exc:
            logger.exception("engine loop died")
            self._die(self.error or f"the engine stopped: {type(exc).__name__}: {exc}")
        finally:
            self.runner.close()

    def _set_budget(self, adapter: FamilyAdapter) -> None:
        """The configured token budget, or the knee of a short profile of this model here."""
        config = self.config
        if config.max_num_batched_tokens is not None or config.profile_seconds <= 0:
            return
        profile = profile_forward(adapter, config.max_batch_size, config.profile_seconds)
        logger.info("%s", profile.describe())
        budget = profile.max_num_batched_tokens
        self.scheduler.config = replace(self.scheduler.config, max_num_batched_tokens=budget)
        self.stats.max_num_batched_tokens = budget
        self.stats.forward_profile = profile.describe()

    def _make_runner(self, adapter: FamilyAdapter) -> Runner:
        if self.config.cfg_parallel_size > 1:
            from omni.engine.parallel import CfgParallelRunner

            return CfgParallelRunner(adapter, self.config, on_worker_death=self.mark_dead)
        if self.config.overlap_stages:
            stages = ThreadStages(adapter, notify=lambda: self.submit(Wakeup()))
        else:
            stages = InlineStages(adapter)
        stages.observer = self.observer
        return Runner(adapter, stages)

    def mark_dead(self, error: str) -> None:
        """Callable from any thread: waiting clients see DEAD within one liveness poll."""
        logger.error("%s", error)
        self.error = error
        self.state = EngineState.DEAD

    def step(self) -> bool:
        """Schedule, execute, update; False when there was nothing to do (wait for a message)."""
        if not self.scheduler.has_work:
            return False
        output = self.scheduler.schedule()
        if output.is_empty and not self.runner.has_results():
            return False
        start = time.monotonic()
        runner_output = self.runner.execute(output)
        done = self.scheduler.update(output, runner_output)
        if output.denoise:
            self._record_forward(output, start)
        self._publish_step(output, done, runner_output.previews)
        return True

    def _record_forward(self, output: SchedulerOutput, start: float) -> None:
        rows = sum(r.num_rows for r in output.denoise)
        tokens = rows * max(r.tokens_per_row for r in output.denoise)
        self.stats.record_batch(len(output.denoise), rows, tokens)
        self.observer.on_forward(time.monotonic() - start, len(output.denoise))
        caches = [r.cache for r in self.scheduler.running if r.cache is not None]
        self.stats.record_step_cache(sum(cache.nbytes for cache in caches))
        self.step_records.append(
            StepRecord(output.step, start, time.monotonic(), len(output.denoise), rows, tokens)
        )

    def _drain_inbox(self, block: bool) -> bool:
        """Apply waiting messages; False once told to shut down."""
        message = self.inbox.get() if block else self._poll()
        while message is not None:
            if isinstance(message, Shutdown):
                self._fail_all("the engine is shutting down", EngineNotReadyError.code)
                return False
            if isinstance(message, AddRequest):
                self._add(message.requests)
            elif isinstance(message, Abort):
                self._abort(message.request_id)
            message = self._poll()
        self._count_queues()
        return True

    def _poll(self) -> Inbox | None:
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            return None

    def _add(self, requests: tuple[Request, ...]) -> None:
        try:
            self.scheduler.add(*requests)  # the n images of one HTTP request start together
        except EngineOverloadedError as exc:
            self.stats.num_failed += len(requests)
            self.observer.on_failed("failed", len(requests))
            self.publish([Failed(r.request_id, str(exc), exc.code) for r in requests])

    def _abort(self, request_id: str) -> None:
        request = self.scheduler.abort(request_id)
        if request is not None:
            self.runner.release([request_id])
            self._count_queues()
            self.stats.num_aborted += 1
            self.observer.on_failed("aborted")
            self.publish([Failed(request_id, "the request was aborted", RequestAbortedError.code)])

    def _publish_step(
        self, output: SchedulerOutput, done: list[Request], previews: list[DecodedPreview]
    ) -> None:
        self._count_queues()  # before publishing: a client reading stats must see this step
        self.stats.num_previews += len(previews)
        # Previews first: one decoded in the same step as its request's output came before it.
        events: list[Event] = [Preview(p.request_id, p.steps_done, p.output) for p in previews]
        events += [
            Progress(r.request_id, r.step_index, r.num_steps)
            for r in output.denoise
            if not r.status.is_finished
        ]
        for request in done:
            if request.status == RequestStatus.FINISHED:
                self.stats.num_finished += 1
                self.observer.on_finished(request)
                events.append(
                    Finished(
                        request.request_id,
                        request.params,
                        request.output,
                        queue_time_s=request.first_step_time - request.arrival_time,
                        inference_time_s=request.finish_time - request.arrival_time,
                        cache_skipped_steps=(
                            None if request.cache is None else request.cache.skipped_steps
                        ),
                        tokens_per_row=request.tokens_per_row,
                    )
                )
            else:
                self.stats.num_failed += 1
                self.observer.on_failed("failed")
                message = request.error or "failed"
                events.append(Failed(request.request_id, message, "generation_failed"))
        if events:
            self.publish(events)

    def _count_queues(self) -> None:
        self.stats.num_running = len(self.scheduler.running)
        self.stats.num_waiting = len(self.scheduler.waiting)

    def _die(self, error: str) -> None:
        self.error = error
        self.state = EngineState.DEAD
        self._fail_all(error, EngineNotReadyError.code)
        # Requests sent after death still get an answer.
        while (message := self._poll()) is not None:
            if isinstance(message, AddRequest):
                code = EngineNotReadyError.code
                self.publish([Failed(r.request_id, error, code) for r in message.requests])

    def _fail_all(self, error: str, code: str) -> None:
        requests = self.scheduler.fail_all()
        self.stats.num_failed += len(requests)
        if requests:
            self.observer.on_failed("failed", len(requests))
            self.publish([Failed(r.request_id, error, code) for r in requests])
