"""The simulated clock: timed events, and processor-shared work between them.

Work (a forward, an encode, a decode, a pipeline call, an HTTP answer) runs in a `Pool`: with
`capacity` None every job runs at full speed beside the others; with a capacity C, n > C
concurrent jobs each run at C/n of full speed (one interpreter lock shared by threads, one
GPU's SMs shared by its streams). `slowdown` stretches all work alike.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

EPSILON_S = 1e-9


class Pool:
    """Processor sharing: each of n jobs runs at min(1, capacity / n) of full speed."""

    def __init__(self, capacity: float | None, slowdown: float = 1.0) -> None:
        self.capacity = capacity
        self.slowdown = slowdown
        self.speed = 1.0 / slowdown
        self.jobs: dict[int, list] = {}  # id -> [remaining seconds of work, callback]
        self.last = 0.0
        self._ids = itertools.count()

    def rate(self) -> float:
        n = len(self.jobs)
        share = 1.0 if self.capacity is None or n <= self.capacity else self.capacity / n
        return share * self.speed

    def advance(self, now: float) -> None:
        if self.jobs and now > self.last:
            done = (now - self.last) * self.rate()
            for job in self.jobs.values():
                job[0] -= done
        self.last = max(self.last, now)

    def next_done(self) -> float:
        if not self.jobs:
            return math.inf
        return self.last + max(0.0, min(job[0] for job in self.jobs.values())) / self.rate()

    def add(self, now: float, work_s: float, callback: Callable[[], None]) -> None:
        self.advance(now)
        self.jobs[next(self._ids)] = [work_s, callback]

    def pop_done(self) -> list[Callable[[], None]]:
        """The jobs due now: the least remaining work and any within rounding of it (at large
        clock values a float cannot carry remaining work down to zero exactly)."""
        if not self.jobs:
            return []
        least = min(job[0] for job in self.jobs.values())
        done = [key for key, job in self.jobs.items() if job[0] <= max(least, 0.0) + EPSILON_S]
        return [self.jobs.pop(key)[1] for key in done]


class Loop:
    """The simulated clock: timed events, and the pool's completions between them."""

    def __init__(self, capacity: float | None, slowdown: float = 1.0) -> None:
        self.now = 0.0
        self.pool = Pool(capacity, slowdown)
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def at(self, time: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._events, (max(time, self.now), next(self._seq), callback))

    def work(self, seconds: float, callback: Callable[[], None]) -> None:
        self.pool.add(self.now, seconds, callback)

    def run(self) -> None:
        while True:
            pool_time = self.pool.next_done()
            event_time = self._events[0][0] if self._events else math.inf
            if pool_time == event_time == math.inf:
                return
            if pool_time <= event_time:
                self.now = pool_time
                self.pool.advance(self.now)
                for callback in self.pool.pop_done():
                    callback()
            else:
                self.now, _, callback = heapq.heappop(self._events)
                self.pool.advance(self.now)
                callback()
