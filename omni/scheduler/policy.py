"""Scheduling policies: the order in which requests claim a forward's budget.

Each policy is a sort key over requests; the scheduler walks requests in that order. Every
policy puts starved requests first: a request that has not run (or, waiting, not been admitted)
for `max_starvation_steps` engine steps ranks ahead of all others, oldest first. That is the
starvation bound of `priority` and `shortest`; under `fcfs` the order is arrival already.
"""

from __future__ import annotations

from collections.abc import Callable

from omni.request import Request

RankKey = Callable[[Request], tuple]


def fcfs(request: Request) -> tuple:
    return (request.arrival_step, request.arrival_time)


def priority(request: Request) -> tuple:
    """Lower `priority` first, as vLLM's; equal priorities in arrival order."""
    return (request.rank_priority, request.arrival_step, request.arrival_time)


def shortest(request: Request) -> tuple:
    """Fewest remaining steps first: the lowest mean latency."""
    return (request.remaining_steps, request.arrival_step, request.arrival_time)


POLICIES: dict[str, RankKey] = {"fcfs": fcfs, "priority": priority, "shortest": shortest}


def ranked(requests: list[Request], policy: RankKey, step: int, max_starvation: int) -> list:
    def key(request: Request) -> tuple:
        starved = step - request.last_progress_step >= max_starvation
        return (0, *fcfs(request)) if starved else (1, *policy(request))

    return sorted(requests, key=key)
