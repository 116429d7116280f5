from omni.scheduler.scheduler import RunnerOutput, Scheduler, SchedulerConfig, SchedulerOutput

__all__ = ["RunnerOutput", "Scheduler", "SchedulerConfig", "SchedulerOutput"]
