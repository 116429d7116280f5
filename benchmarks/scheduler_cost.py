"""omni's Scheduler in a steady state, driven by made-up runner outputs: its cost per step."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Hashable, Sequence

from omni.request import GenerationParams, Request
from omni.scheduler import RunnerOutput, Scheduler, SchedulerConfig

PARAMS = GenerationParams(prompt="benchmark")


class SteadyScheduler:
    """Keeps `num_live` requests in the scheduler: each one that finishes is replaced at once.

    Requests cycle through `keys` (one batch group per key) and `step_counts`.
    """

    def __init__(
        self,
        num_live: int,
        max_batch_size: int,
        keys: Sequence[Hashable] = ("512x512",),
        step_counts: Sequence[int] = (28,),
    ) -> None:
        self.scheduler = Scheduler(
            SchedulerConfig(
                max_batch_size=max_batch_size,
                max_num_running=num_live,
                max_num_waiting=num_live,
            )
        )
        self._shapes = itertools.cycle(itertools.product(keys, step_counts))
        self._ids = itertools.count()
        for _ in range(num_live):
            self.scheduler.add(self._new_request())

    def _new_request(self) -> Request:
        key, num_steps = next(self._shapes)
        return Request(f"r{next(self._ids)}", PARAMS, step_keys=(key,) * num_steps)

    def step(self) -> int:
        """One schedule() + update(); returns how many requests ran a denoising step."""
        output = self.scheduler.schedule()
        for _ in self.scheduler.update(output, RunnerOutput()):
            self.scheduler.add(self._new_request())
        return len(output.denoise)


def scheduler_step_seconds(num_live: int, steps: int, repeats: int = 200) -> float:
    """Median seconds of one schedule() + update() with `num_live` requests in one group."""
    steady = SteadyScheduler(num_live, max_batch_size=num_live, step_counts=(steps,))
    for _ in range(steps + 2):  # past the first admissions
        steady.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        steady.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
