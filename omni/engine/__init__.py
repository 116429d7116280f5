from omni.engine.async_engine import AsyncEngine
from omni.engine.engine import Engine, EngineState
from omni.engine.messages import Failed, Finished, Preview, Progress
from omni.engine.service import EngineService, ReplicaStatus
from omni.engine.stats import EngineStats

__all__ = [
    "AsyncEngine",
    "Engine",
    "EngineService",
    "EngineState",
    "EngineStats",
    "Failed",
    "Finished",
    "Preview",
    "Progress",
    "ReplicaStatus",
]
