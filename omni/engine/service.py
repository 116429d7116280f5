"""What the HTTP side needs from an engine: one local AsyncEngine, or a pool of replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from omni.config import EngineConfig
from omni.engine.engine import EngineState
from omni.engine.histograms import HistogramCounts
from omni.engine.messages import Finished, Progress
from omni.engine.observer import EngineObserver
from omni.engine.stats import EngineStats
from omni.models import ModelInfo, ServingDefaults
from omni.request import GenerationParams


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One engine replica as it last reported itself."""

    replica: str  # the replica's id in its deployment
    pid: int
    node: str
    state: str  # an EngineState value
    error: str | None
    num_free_slots: int
    stats: EngineStats
    histograms: dict[str, HistogramCounts] = field(default_factory=dict)  # its engine's own


class EngineService(Protocol):
    """The engine as the HTTP handlers use it. Calls that need the model are async, so a pool
    can send them to a replica; the rest answer from what the service already knows.
    Implementations subclass it for `generate`."""

    config: EngineConfig
    observer: EngineObserver

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait_ready(self, timeout: float | None = None) -> None: ...

    @property
    def state(self) -> EngineState: ...
    @property
    def error(self) -> str | None: ...
    @property
    def num_free_slots(self) -> int: ...
    @property
    def info(self) -> ModelInfo: ...
    @property
    def defaults(self) -> ServingDefaults: ...

    def stats(self) -> EngineStats: ...
    def replicas(self) -> list[ReplicaStatus]: ...
    async def validate(self, params: GenerationParams) -> GenerationParams: ...
    async def generate(self, params: GenerationParams, request_id: str | None = None) -> Finished:
        (finished,) = await self.generate_many([params], [request_id])
        return finished

    async def generate_many(
        self, params: list[GenerationParams], request_ids: list[str | None] | None = None
    ) -> list[Finished]: ...
    def stream(
        self, params: GenerationParams, request_id: str | None = None
    ) -> AsyncIterator[Progress | Finished]: ...
