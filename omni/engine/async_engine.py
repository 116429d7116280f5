"""The asyncio face of the engine: submit, stream progress, await results, abort."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace

from omni.aio import wait_at_most
from omni.config import EngineConfig
from omni.engine.engine import Engine, EngineState
from omni.engine.messages import Abort, AddRequest, Event, Failed, Finished, Preview, Progress
from omni.engine.observer import EngineObserver
from omni.engine.service import EngineService, ReplicaStatus
from omni.engine.stats import EngineStats
from omni.errors import (
    EngineNotReadyError,
    EngineOverloadedError,
    InvalidRequestError,
    OmniError,
    RequestAbortedError,
    RequestFailedError,
)
from omni.lora.held import acquire_loras, loras_held
from omni.models import ModelInfo, ServingDefaults
from omni.request import GenerationParams, Request

ERRORS_BY_CODE: dict[str, type[OmniError]] = {
    EngineNotReadyError.code: EngineNotReadyError,
    EngineOverloadedError.code: EngineOverloadedError,
    RequestAbortedError.code: RequestAbortedError,
}
LIVENESS_POLL_S = 1.0


class AsyncEngine(EngineService):
    def __init__(self, config: EngineConfig, engine: Engine | None = None) -> None:
        self.config = config
        self._engine = engine
        self._streams: dict[str, asyncio.Queue[Event]] = {}
        # Submitted ids whose Finished or Failed has not come back: one a caller gave up on may
        # still be in the engine (aborting, or decoding), so its id is not free to use again.
        self._in_engine: dict[str, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.observer = EngineObserver()  # set before start: the engine reports to it

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._engine is None:
            self._engine = Engine(self.config, self._publish_threadsafe, self.observer)
        else:
            self._engine.publish = self._publish_threadsafe
            self._engine.observer = self.observer
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
    def num_free_slots(self) -> int:
        """How many more requests it would take now without refusing (none unless ready)."""
        if not self.is_ready:
            return 0
        limit = self.config.max_num_running + self.config.max_num_waiting
        return max(0, limit - len(self._streams))

    @property
    def info(self) -> ModelInfo:
        self._check_ready()
        return self._engine.adapter.info

    @property
    def defaults(self) -> ServingDefaults:
        """The values the model uses for the fields a request leaves out."""
        self._check_ready()
        return self._engine.adapter.defaults

    def stats(self) -> EngineStats:
        return self._engine.stats.copy()

    def replicas(self) -> list[ReplicaStatus]:
        """None: this engine is the only one (a pool lists its replicas)."""
        return []

    async def validate(self, params: GenerationParams) -> GenerationParams:
        """`resolve` for callers that may be talking to a remote engine, with the request's LoRA
        adapters read (a file that is not a LoRA for this model is a 400 here)."""
        resolved = self.resolve(params)
        await self.load_loras(resolved)
        return resolved

    def resolve(self, params: GenerationParams) -> GenerationParams:
        """The params the model will use; raises InvalidRequestError for ones it cannot serve."""
        self._check_ready()
        if params.cache is None:  # the server's default step cache
            params = replace(params, cache=self.config.cache)
            if params.cache_threshold is None:
                params = replace(params, cache_threshold=self.config.cache_threshold)
        resolved = self._engine.adapter.resolve(params)
        self._check_output_pixels(resolved)
        self._check_lora(resolved)
        return resolved

    def _check_lora(self, params: GenerationParams) -> None:
        if not params.lora:
            return
        adapter = self._engine.adapter
        if adapter.loras is None:
            raise InvalidRequestError(
                "this server serves no LoRA adapters (start it with --lora-modules or --lora-dir)"
                if adapter.supports_lora
                else f"LoRA is not supported by model {adapter.name}",
                param="lora",
            )
        adapter.loras.check(params.lora)

    def _check_output_pixels(self, params: GenerationParams) -> None:
        limit = self.config.max_output_pixels
        frames = params.output_num_frames  # interpolated frames count too
        pixels = params.width * params.height * frames
        if limit is not None and pixels > limit:
            made = f"{params.width}x{params.height}" + (f" x {frames} frames" if frames > 1 else "")
            param = "size" if params.width * params.height > limit else "num_frames"
            if (
                param == "num_frames"
                and params.width * params.height * (params.num_frames or 1) <= limit
            ):
                param = "frame_interpolation_exp"
            raise InvalidRequestError(
                f"{made} is {pixels:,} pixels, over this server's limit of {limit:,} per image "
                "or video (--max-output-pixels)",
                param=param,
            )

    async def generate_many(
        self, params: list[GenerationParams], request_ids: list[str | None] | None = None
    ) -> list[Finished]:
        """Submit together (they share their first batch); if one fails, the others are aborted."""
        requests = self._make_requests(params, request_ids or [None] * len(params))
        await self._ids_free(requests)
        async with loras_held(self._engine.adapter.loras, requests):
            self._submit(requests)
            tasks = [asyncio.ensure_future(self._result(r.request_id)) for r in requests]
            try:
                return list(await asyncio.gather(*tasks))
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def stream(
        self, params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Progress | Preview | Finished]:
        """Progress and Preview (partial image) events, then one Finished; raises on failure.
        Closing early aborts."""
        (request,) = self._make_requests([params], [request_id])
        await self._ids_free([request])
        async with loras_held(self._engine.adapter.loras, [request]):
            self._submit([request])
            async with aclosing(self._follow(request.request_id)) as events:
                async for event in events:
                    yield event

    async def load_loras(self, params: GenerationParams) -> None:
        """Read a request's adapters into the device's LRU now, holding none: a file that is not
        a LoRA for this model is refused (InvalidRequestError) before a video job is accepted."""
        loras = self._engine.adapter.loras
        if loras is not None and params.lora:
            loras.release(await acquire_loras(loras, params.lora))

    async def _result(self, request_id: str) -> Finished:
        async with aclosing(self._follow(request_id)) as events:
            async for event in events:
                if isinstance(event, Finished):
                    return event
        raise RequestFailedError("the request ended without a result")

    async def _follow(self, request_id: str) -> AsyncIterator[Progress | Preview | Finished]:
        events = self._streams[request_id]
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
            del self._streams[request_id]
            if not finished:
                self._engine.submit(Abort(request_id))

    async def _ids_free(self, requests: list[Request]) -> None:
        """Wait until an earlier request of the same id, given up on, has sent its last event,
        so none of its events reaches the new one's stream. (An aborted request's encode or
        decode that still finishes on a stage thread is dropped by the engine: stage results
        are kept with the request object they ran for.)"""
        for request in requests:
            while (left := self._in_engine.get(request.request_id)) is not None:
                with contextlib.suppress(TimeoutError):
                    await wait_at_most(left.wait(), LIVENESS_POLL_S)
                self._check_ready()
            if request.request_id in self._streams:  # taken by another caller meanwhile
                raise ValueError(f"request {request.request_id} is already running")

    def _submit(self, requests: list[Request]) -> None:
        for request in requests:
            self._streams[request.request_id] = asyncio.Queue()
            self._in_engine[request.request_id] = asyncio.Event()
        self._engine.submit(AddRequest(tuple(requests)))

    def abort(self, request_id: str) -> None:
        self._engine.submit(Abort(request_id))

    def _make_requests(
        self, params: list[GenerationParams], request_ids: list[str | None]
    ) -> list[Request]:
        """Validated requests; raises before anything is submitted."""
        limit = self.config.max_num_running + self.config.max_num_waiting
        if len(params) > limit:  # never servable: waiting for room would not help
            raise InvalidRequestError(
                f"{len(params)} outputs in one request is more than this server holds at once "
                f"({limit}: --max-num-running plus --max-num-waiting)",
                param="n",
            )
        if len(self._streams) + len(params) > limit:
            raise EngineOverloadedError(f"the engine already holds {len(self._streams)} requests")
        requests = []
        for one, request_id in zip(params, request_ids, strict=True):
            resolved = self.resolve(one)
            request_id = request_id or uuid.uuid4().hex
            if request_id in self._streams or any(r.request_id == request_id for r in requests):
                raise ValueError(f"request {request_id} is already running")
            adapter = self._engine.adapter
            step_keys, num_rows = adapter.plan(resolved)
            tokens = adapter.tokens_per_row(resolved)
            request = Request(request_id, resolved, step_keys, num_rows, tokens)
            request.pad_group = adapter.pad_group(resolved)
            requests.append(request)
        return requests

    async def _next_event(self, events: asyncio.Queue[Event]) -> Event:
        while True:
            try:
                return await wait_at_most(events.get(), LIVENESS_POLL_S)
            except TimeoutError:
                if self.state == EngineState.DEAD:
                    raise EngineNotReadyError(self.error or "the engine died") from None

    def _check_ready(self) -> None:
        if self.state == EngineState.LOADING:
            raise EngineNotReadyError(f"{self.config.model} is still loading")
        if self.state == EngineState.DEAD:
            raise EngineNotReadyError(self.error or "the engine died")

    def _publish_threadsafe(self, events: list[Event]) -> None:
        self._loop.call_soon_threadsafe(self._dispatch, events)

    def _dispatch(self, events: list[Event]) -> None:
        for event in events:
            stream = self._streams.get(event.request_id)
            if stream is not None:
                stream.put_nowait(event)
            if isinstance(event, Finished | Failed) and event.request_id in self._in_engine:
                self._in_engine.pop(event.request_id).set()
