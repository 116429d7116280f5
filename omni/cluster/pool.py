"""The replicas as one engine: what the HTTP side holds instead of a local AsyncEngine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from ray.serve.handle import DeploymentResponse

from omni.cluster.board import REPORT_INTERVAL_S, open_board
from omni.cluster.deploy import (
    PlacementError,
    cluster_address,
    join,
    start_replicas,
    undeploy,
)
from omni.cluster.errors import as_omni_error
from omni.cluster.stats import merge_stats
from omni.config import EngineConfig
from omni.engine import EngineService, EngineState, EngineStats, Finished, Progress, ReplicaStatus
from omni.engine.observer import EngineObserver
from omni.errors import EngineNotReadyError, ReplicaLostError
from omni.models import ModelInfo, ServingDefaults
from omni.request import GenerationParams

logger = logging.getLogger("omni.cluster")

READY_POLL_S = 0.1


class ReplicaPool(EngineService):
    """Requests go through a Serve handle, which routes each to the less loaded of two replicas
    it picks (power of two choices); statuses come from the board the replicas post to.

    With `join_only` (a further front end of --api-server-count) it never starts replicas: it
    joins the ones there or fails.
    """

    def __init__(
        self,
        config: EngineConfig,
        num_replicas: int,
        ray_address: str | None,
        join_only: bool = False,
    ) -> None:
        self.config = config
        self.num_replicas = num_replicas
        self.ray_address = ray_address
        self.join_only = join_only
        self.cluster_address: str | None = None  # the GCS's HOST:PORT, once joined
        self.observer = EngineObserver()  # replicas keep their own; the pool reports their counts
        self._handle = None
        self._board = None
        self._info: ModelInfo | None = None
        self._defaults: ServingDefaults | None = None
        self._statuses: list[ReplicaStatus] = []
        self._error: str | None = None
        self._runner: asyncio.Task[None] | None = None
        self._started_replicas = False

    async def start(self) -> None:
        """Returns at once; the replicas start and load their models in the background."""
        self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            handle = await asyncio.to_thread(join, self.ray_address)
            self.cluster_address = await asyncio.to_thread(cluster_address)
            if handle is None and self.join_only:
                raise RuntimeError(
                    f"no engine replicas to join on the cluster at {self.ray_address}"
                )
            if handle is None:
                self._started_replicas = True  # set first: a stop while they load removes them
                can_grow = self.ray_address is not None  # a cluster omni started cannot
                handle = await asyncio.to_thread(
                    start_replicas, self.config, self.num_replicas, can_grow
                )
            self._info = await self._call(lambda: handle.info.remote())
            self._defaults = await self._call(lambda: handle.defaults.remote())
            board = self._board = await asyncio.to_thread(open_board)
            self._statuses = await board.read.remote()
        except Exception as exc:
            if isinstance(exc, PlacementError):  # says all there is to say: no traceback
                logger.error("the engine replicas cannot be placed: %s", exc)
            else:
                logger.exception("the engine replicas could not start")
            self._error = f"the engine replicas could not start: {exc}"
            return
        self._handle = handle
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            try:
                self._statuses = await board.read.remote()
            except Exception:
                logger.warning("could not read the replicas' statuses", exc_info=True)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await asyncio.to_thread(undeploy, self._started_replicas, self.ray_address is None)

    async def wait_ready(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            while self.state == EngineState.LOADING:
                await asyncio.sleep(READY_POLL_S)
        if self.state == EngineState.DEAD:
            raise EngineNotReadyError(self.error or "no replica is running")

    @property
    def state(self) -> EngineState:
        if self._handle is None:
            return EngineState.DEAD if self._error else EngineState.LOADING
        return EngineState.READY if self._ready() else EngineState.DEAD

    @property
    def error(self) -> str | None:
        if self._error or self._handle is None or self._ready():
            return self._error
        return f"none of the {self.num_replicas} replicas is running; Serve is restarting them"

    def _ready(self) -> list[ReplicaStatus]:
        return [s for s in self._statuses if s.state == EngineState.READY.value]

    @property
    def num_free_slots(self) -> int:
        return sum(s.num_free_slots for s in self._ready())

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise EngineNotReadyError(self.error or f"{self.config.model} is still loading")
        return self._info

    @property
    def defaults(self) -> ServingDefaults:
        if self._defaults is None:
            raise EngineNotReadyError(self.error or f"{self.config.model} is still loading")
        return self._defaults

    def stats(self) -> EngineStats:
        return merge_stats([s.stats for s in self._statuses])

    def replicas(self) -> list[ReplicaStatus]:
        return list(self._statuses)

    async def validate(self, params: GenerationParams) -> GenerationParams:
        return await self._call(lambda: self._routed().validate.remote(params))

    async def generate_many(
        self, params: list[GenerationParams], request_ids: list[str | None] | None = None
    ) -> list[Finished]:
        """A request whose replica died runs once more on another: generating has no side
        effects, and once bounds what a request that kills its replica can do."""
        call_id = uuid.uuid4().hex
        send = lambda: self._routed().generate_many.remote(params, request_ids, call_id)  # noqa: E731
        try:
            return await self._call(send, call_id)
        except ReplicaLostError:
            logger.warning("a replica died under %d requests; running them again", len(params))
            return await self._call(send, call_id)

    async def stream(
        self, params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Progress | Finished]:
        """Not run again if its replica dies: its progress has been seen already."""
        call_id = uuid.uuid4().hex
        events = self._routed().options(stream=True).stream.remote(params, request_id, call_id)
        finished = False
        try:
            async for event in events:
                finished = isinstance(event, Finished)
                yield event
        except Exception as exc:
            raise as_omni_error(exc) from exc
        finally:
            if not finished:
                events.cancel()  # the replica's engine aborts the request at its next step
                self._cancel_on_replicas(call_id)

    def _cancel_on_replicas(self, call_id: str | None) -> None:
        """Serve's cancel can be lost while it hands the call to a replica; the replicas also
        read the board's cancelled calls every REPORT_INTERVAL_S and stop those they run."""
        if call_id is not None and self._board is not None:
            self._board.cancel.remote(call_id)  # not awaited: the caller is being cancelled

    def _routed(self):
        if self._handle is None:
            raise EngineNotReadyError(self.error or f"{self.config.model} is still loading")
        return self._handle

    async def _call(
        self, send: Callable[[], DeploymentResponse], call_id: str | None = None
    ) -> Any:
        response = send()
        try:
            return await response
        except asyncio.CancelledError:  # the client went away: so does the replica's request
            response.cancel()
            self._cancel_on_replicas(call_id)
            raise
        except Exception as exc:
            raise as_omni_error(exc) from exc
