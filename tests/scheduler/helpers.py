from __future__ import annotations

import itertools

from omni.request import GenerationParams, Request
from omni.scheduler import RunnerOutput, Scheduler, SchedulerOutput

_ids = itertools.count()


def make_request(
    num_steps: int = 4, key: object = "denoiser", rows: int = 1, tokens: int = 1, priority=None
) -> Request:
    return Request(
        request_id=f"req-{next(_ids)}",
        params=GenerationParams(prompt="p", priority=priority),
        step_keys=(key,) * num_steps,
        num_rows=rows,
        tokens_per_row=tokens,
    )


def run_step(
    scheduler: Scheduler, failed: dict[str, str] | None = None
) -> tuple[SchedulerOutput, list[Request]]:
    """One engine step with stages that finish within the step (as InlineStages do)."""
    output = scheduler.schedule()
    runner_output = RunnerOutput(
        encoded=[r.request_id for r in output.prepare],
        decoded=[r.request_id for r in output.decode],
        failed=failed or {},
    )
    return output, scheduler.update(output, runner_output)


def run_until_idle(scheduler: Scheduler, limit: int = 10_000) -> list[Request]:
    finished = []
    for _ in range(limit):
        if not scheduler.has_work:
            return finished
        finished += run_step(scheduler)[1]
    raise AssertionError("scheduler did not drain")


def steps_until_done(scheduler: Scheduler, request: Request, limit: int = 10_000) -> int:
    """Engine steps (forwards) from now until `request` has left the scheduler."""
    start = scheduler.num_steps
    for _ in range(limit):
        if request.status.is_finished:
            return scheduler.num_steps - start
        run_step(scheduler)
    raise AssertionError(f"{request.request_id} did not finish")
