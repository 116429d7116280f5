from omni.scheduler.policy import POLICIES
from omni.scheduler.scheduler import RunnerOutput, Scheduler, SchedulerConfig, SchedulerOutput

__all__ = ["POLICIES", "RunnerOutput", "Scheduler", "SchedulerConfig", "SchedulerOutput"]
