"""One engine replica: the class a Ray Serve deployment runs, one AsyncEngine per replica."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import ray
from ray import serve

from omni.cluster.board import REPORT_INTERVAL_S, open_board
from omni.cluster.calls import RunningCalls
from omni.config import EngineConfig
from omni.engine import AsyncEngine, EngineState, Finished, Progress, ReplicaStatus
from omni.engine.histograms import HistogramObserver
from omni.models import ModelInfo, ServingDefaults
from omni.request import GenerationParams

logger = logging.getLogger("omni.cluster")


class EngineReplica:
    """Serve routes a request here only once the constructor returns: once the model loaded."""

    async def __init__(self, config: EngineConfig, load_timeout_s: float) -> None:
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.node = ray.get_runtime_context().get_node_id()
        self.engine = AsyncEngine(config)
        self.histograms = HistogramObserver()
        self.engine.observer = self.histograms  # posted with the status, for /metrics
        self.calls = RunningCalls()
        await self.engine.start()
        await self.engine.wait_ready(load_timeout_s)
        self.board = open_board()  # a RayService starts replicas before any front end
        self.calls.cancel(await self.board.post.remote(self.status()))
        self.reporter = asyncio.create_task(self._report())

    def status(self) -> ReplicaStatus:
        engine = self.engine
        return ReplicaStatus(
            replica=self.replica,
            pid=os.getpid(),
            node=self.node,
            state=engine.state.value,
            error=engine.error,
            num_free_slots=engine.num_free_slots,
            stats=engine.stats(),
            histograms=self.histograms.histograms(),
        )

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            try:
                cancelled = await self.board.post.remote(self.status())
            except Exception:  # the board restarting must not end the reports for good
                logger.warning("replica %s could not post its status", self.replica)
                continue
            for call_id in self.calls.cancel(cancelled):
                logger.warning("call %s: still running after its front end cancelled it", call_id)

    async def info(self) -> ModelInfo:
        return self.engine.info

    async def defaults(self) -> ServingDefaults:
        return self.engine.defaults

    async def validate(self, params: GenerationParams) -> GenerationParams:
        return await self.engine.validate(params)

    async def generate_many(
        self,
        params: list[GenerationParams],
        request_ids: list[str | None] | None,
        call_id: str | None = None,
    ) -> list[Finished]:
        with self.calls.running(call_id):
            return await self.engine.generate_many(params, request_ids)

    async def stream(
        self, params: GenerationParams, request_id: str | None, call_id: str | None = None
    ) -> AsyncIterator[Progress | Finished]:
        with self.calls.running(call_id):
            async for event in self.engine.stream(params, request_id):
                yield event

    async def check_health(self) -> None:
        """Serve calls this periodically; raising makes it replace the replica."""
        if self.engine.state == EngineState.DEAD:
            raise RuntimeError(f"the engine died: {self.engine.error}")

    async def __del__(self) -> None:
        self.reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reporter
        await self.engine.stop()
