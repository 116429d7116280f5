from omni.engine.async_engine import AsyncEngine
from omni.engine.engine import Engine, EngineState
from omni.engine.messages import Failed, Finished, Preview, Progress
from omni.engine.stats import EngineStats

__all__ = [
    "AsyncEngine",
    "Engine",
    "EngineState",
    "EngineStats",
    "Failed",
    "Finished",
    "Preview",
    "Progress",
]
