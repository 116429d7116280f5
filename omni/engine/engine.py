"""The engine actor: one thread owns the model and runs schedule -> execute -> update."""

from __future__ import annotations

import enum
import logging
import queue
import threading
from collections.abc import Callable

from omni.config import EngineConfig
from omni.engine.messages import Abort, AddRequest, Event, Failed, Finished, Progress, Shutdown
from omni.engine.runner import Runner
from omni.engine.stats import EngineStats
from omni.errors import EngineNotReadyError, EngineOverloadedError, RequestAbortedError
from omni.models import FamilyAdapter, load_model
from omni.request import Request, RequestStatus
from omni.scheduler import Scheduler, SchedulerOutput

logger = logging.getLogger(__name__)

Inbox = AddRequest | Abort | Shutdown


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DEAD = "dead"


class Engine:
    """Owns the scheduler and the runner; talks to the world only through inbox and `publish`."""

    def __init__(
        self,
        config: EngineConfig,
        publish: Callable[[Event], None],
    ) -> None:
        self.config = config
        self.publish = publish
        self.inbox: queue.SimpleQueue[Inbox] = queue.SimpleQueue()
        self.scheduler = Scheduler(config.scheduler_config)
        self.stats = EngineStats()
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
            while self._drain_inbox(block=not self.scheduler.has_work):
                if self.scheduler.has_work:
                    self.step()
            self._die("the engine has been stopped")
        except BaseException as exc:
            logger.exception("engine loop died")
            self._die(self.error or f"the engine stopped: {type(exc).__name__}: {exc}")
        finally:
            self.runner.close()

    def _make_runner(self, adapter: FamilyAdapter) -> Runner:
        if self.config.cfg_parallel_size > 1:
            from omni.engine.parallel import CfgParallelRunner

            return CfgParallelRunner(adapter, self.config, on_worker_death=self.mark_dead)
        return Runner(adapter)

    def mark_dead(self, error: str) -> None:
        """Callable from any thread: waiting clients see DEAD within one liveness poll."""
        logger.error("%s", error)
        self.error = error
        self.state = EngineState.DEAD

    def step(self) -> None:
        output = self.scheduler.schedule()
        runner_output = self.runner.execute(output)
        done = self.scheduler.update(output, runner_output)
        self._publish_step(output, done)

    def _drain_inbox(self, block: bool) -> bool:
        """Apply waiting messages; False once told to shut down."""
        message = self.inbox.get() if block else self._poll()
        while message is not None:
            if isinstance(message, Shutdown):
                self._fail_all("the engine is shutting down", EngineNotReadyError.code)
                return False
            if isinstance(message, AddRequest):
                self._add(message.requests)
            else:
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
            for request in requests:
                self.publish(Failed(request.request_id, str(exc), exc.code))

    def _abort(self, request_id: str) -> None:
        request = self.scheduler.abort(request_id)
        if request is not None:
            self.runner.release([request_id])
            self._count_queues()
            self.stats.num_aborted += 1
            self.publish(Failed(request_id, "the request was aborted", RequestAbortedError.code))

    def _publish_step(self, output: SchedulerOutput, done: list[Request]) -> None:
        self._count_queues()  # before publishing: a client reading stats must see this step
        if output.denoise:
            self.stats.record_batch(len(output.denoise))
        for request in output.denoise:
            if not request.status.is_finished:
                self.publish(Progress(request.request_id, request.step_index, request.num_steps))
        for request in done:
            if request.status == RequestStatus.FINISHED:
                self.stats.num_finished += 1
                self.publish(
                    Finished(
                        request.request_id,
                        request.params,
                        request.output,
                        queue_time_s=request.first_step_time - request.arrival_time,
                        inference_time_s=request.finish_time - request.arrival_time,
                    )
                )
            else:
                self.stats.num_failed += 1
                self.publish(
                    Failed(request.request_id, request.error or "failed", "generation_failed")
                )
        self._count_queues()

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
                for request in message.requests:
                    self.publish(Failed(request.request_id, error, EngineNotReadyError.code))

    def _fail_all(self, error: str, code: str) -> None:
        for request in [*self.scheduler.waiting, *self.scheduler.running]:
            self.stats.num_failed += 1
            self.publish(Failed(request.request_id, error, code))
        self.scheduler.waiting.clear()
        self.scheduler.running.clear()
