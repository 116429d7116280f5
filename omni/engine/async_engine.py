"""The asyncio face of the engine: submit, stream progress, await results, abort."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from omni.config import EngineConfig
from omni.engine.engine import Engine, EngineState
from omni.engine.messages import Abort, AddRequest, Event, Failed, Finished, Progress
from omni.engine.stats import EngineStats
from omni.errors import (
    EngineNotReadyError,
    EngineOverloadedError,
    OmniError,
    RequestAbortedError,
    RequestFailedError,
)
from omni.models import ModelInfo
from omni.request import GenerationParams, Request

ERRORS_BY_CODE: dict[str, type[OmniError]] = {
    EngineNotReadyError.code: EngineNotReadyError,
    EngineOverloadedError.code: EngineOverloadedError,
    RequestAbortedError.code: RequestAbortedError,
}
LIVENESS_POLL_S = 1.0


class AsyncEngine:
    def __init__(self, config: EngineConfig, engine: Engine | None = None) -> None:
        self.config = config
        self._engine = engine
        self._streams: dict[str, asyncio.Queue[Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._engine is None:
            self._engine = Engine(self.config, self._publish_threadsafe)
        else:
            self._engine.publish = self._publish_threadsafe
        self._engine.start()

    async def wait_ready(self, timeout: float | None = None) -> None:
        loaded = await asyncio.to_thread(self._engine.loaded.wait, timeout)
        if not loaded:
            raise EngineNotReadyError(f"{self.config.model} did not load within {timeout} s")
        self._check_ready()

    async def stop(self) -> None:
        if self._engine is not None:
            await asyncio.to_thread(self._engine.shutdown, 30.0)

    @property
    def state(self) -> EngineState:
        return self._engine.state if self._engine else EngineState.LOADING

    @property
    def is_ready(self) -> bool:
        return self.state == EngineState.READY

    @property
    def error(self) -> str | None:
        return self._engine.error if self._engine else None

    @property
    def info(self) -> ModelInfo:
        self._check_ready()
        return self._engine.adapter.info

    def stats(self) -> EngineStats:
        return self._engine.stats.copy()

    def resolve(self, params: GenerationParams) -> GenerationParams:
        """The params the model will use; raises InvalidRequestError for ones it cannot serve."""
        self._check_ready()
        return self._engine.adapter.resolve(params)

    async def generate(self, params: GenerationParams, request_id: str | None = None) -> Finished:
        async with aclosing(self.stream(params, request_id)) as events:
            async for event in events:
                if isinstance(event, Finished):
                    return event
        raise RequestFailedError("the request ended without a result")

    async def stream(
        self, params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Progress | Finished]:
        """Progress events, then one Finished; raises on failure. Closing early aborts."""
        request = self._make_request(params, request_id)
        events: asyncio.Queue[Event] = asyncio.Queue()
        self._streams[request.request_id] = events
        self._engine.submit(AddRequest(request))
        finished = False
        try:
            while True:
                event = await self._next_event(events)
                if isinstance(event, Failed):
                    finished = True
                    raise ERRORS_BY_CODE.get(event.code, RequestFailedError)(event.message)
                finished = isinstance(event, Finished)
                yield event
                if finished:
                    return
        finally:
            del self._streams[request.request_id]
            if not finished:
                self._engine.submit(Abort(request.request_id))

    def abort(self, request_id: str) -> None:
        self._engine.submit(Abort(request_id))

    def _make_request(self, params: GenerationParams, request_id: str | None) -> Request:
        params = self.resolve(params)
        request_id = request_id or uuid.uuid4().hex
        if request_id in self._streams:
            raise ValueError(f"request {request_id} is already running")
        limit = self.config.max_num_running + self.config.max_num_waiting
        if len(self._streams) >= limit:
            raise EngineOverloadedError(f"the engine already holds {limit} requests")
        step_keys, num_rows = self._engine.adapter.plan(params)
        return Request(request_id, params, step_keys=step_keys, num_rows=num_rows)

    async def _next_event(self, events: asyncio.Queue[Event]) -> Event:
        while True:
            try:
                return await asyncio.wait_for(events.get(), LIVENESS_POLL_S)
            except TimeoutError:
                if self.state == EngineState.DEAD:
                    raise EngineNotReadyError(self.error or "the engine died") from None

    def _check_ready(self) -> None:
        if self.state == EngineState.LOADING:
            raise EngineNotReadyError(f"{self.config.model} is still loading")
        if self.state == EngineState.DEAD:
            raise EngineNotReadyError(self.error or "the engine died")

    def _publish_threadsafe(self, event: Event) -> None:
        self._loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: Event) -> None:
        events = self._streams.get(event.request_id)
        if events is not None:
            events.put_nowait(event)
