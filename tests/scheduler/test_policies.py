"""Scheduling policies, counted in engine steps (forwards), with stages that take one step."""

from __future__ import annotations

import pytest

from omni.request import RequestStatus
from omni.scheduler import Scheduler, SchedulerConfig
from tests.scheduler.helpers import make_request, run_step, steps_until_done

FULL_BUDGET = 32 * 1024  # 32 rows of 1024 tokens


def busy_scheduler(policy: str, **config) -> tuple[Scheduler, list]:
    """32 requests of 50 steps that fill the budget, 10 steps in."""
    scheduler = Scheduler(
        SchedulerConfig(max_num_batched_tokens=FULL_BUDGET, policy=policy, **config)
    )
    running = [make_request(num_steps=50, tokens=1024) for _ in range(32)]
    scheduler.add(*running)
    while scheduler.num_steps < 10:
        run_step(scheduler)
    return scheduler, running


@pytest.mark.parametrize("policy, priority", [("shortest", None), ("priority", -1)])
def test_a_short_request_arriving_into_a_full_budget_finishes_within_6_steps(policy, priority):
    scheduler, running = busy_scheduler(policy)
    progress = [r.step_index for r in running]
    short = make_request(num_steps=4, tokens=1024, priority=priority)
    scheduler.add(short)
    assert steps_until_done(scheduler, short) <= 6
    assert short.status == RequestStatus.FINISHED
    # The request it displaced sat out with its latents and resumed: nobody lost a step.
    run_step(scheduler)
    assert all(r.step_index >= p for r, p in zip(running, progress, strict=True))
    assert all(r.status == RequestStatus.DENOISING for r in running)


def test_a_lower_priority_request_does_not_displace_running_work():
    scheduler, _ = busy_scheduler("priority")
    late = make_request(num_steps=4, tokens=1024, priority=1)
    scheduler.add(late)
    assert steps_until_done(scheduler, late) > 6


def test_fcfs_bound_a_request_waits_for_the_budget_then_runs_its_own_steps():
    """Under fcfs a request arriving into a full budget is admitted once the requests ahead of
    it leave the forward: it finishes within R + S + 2 engine steps, R the most steps any
    request ahead has left and S its own steps (one step's encode, one step's decode)."""
    scheduler, running = busy_scheduler("fcfs")
    remaining = max(r.remaining_steps for r in running)
    short = make_request(num_steps=4, tokens=1024)
    scheduler.add(short)
    taken = steps_until_done(scheduler, short)
    assert 6 < taken <= remaining + 4 + 2


def longest_gap_of_a_displaced_request(policy: str, max_starvation_steps: int) -> int:
    """A 60-step request of priority 5 runs alone, then 8 preferred 30-step requests (priority
    0, fewer steps) arrive at once into forwards of 4 rows: the most engine steps it then went
    without running."""
    scheduler = Scheduler(
        SchedulerConfig(max_batch_size=4, policy=policy, max_starvation_steps=max_starvation_steps)
    )
    displaced = make_request(num_steps=60, priority=5)
    scheduler.add(displaced)
    for _ in range(3):
        run_step(scheduler)
    scheduler.add(*(make_request(num_steps=30, priority=0) for _ in range(8)))
    last_progress, longest_gap = scheduler.num_steps, 0
    while not displaced.status.is_finished:
        before = displaced.step_index
        run_step(scheduler)
        if displaced.step_index > before:
            longest_gap = max(longest_gap, scheduler.num_steps - last_progress)
            last_progress = scheduler.num_steps
    return longest_gap


@pytest.mark.parametrize("policy", ["shortest", "priority"])
def test_no_request_starves_longer_than_the_starvation_bound(policy):
    assert longest_gap_of_a_displaced_request(policy, max_starvation_steps=8) <= 8 + 1
    # Without the bound it sits out a whole round of preferred requests.
    assert longest_gap_of_a_displaced_request(policy, max_starvation_steps=10**6) >= 30


def test_shortest_runs_fewest_remaining_steps_first_when_the_budget_is_short():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=2, policy="shortest"))
    requests = [make_request(num_steps=n) for n in (9, 3, 6, 1)]
    scheduler.add(*requests)
    output, _ = run_step(scheduler)
    assert output.prepare == [requests[3], requests[1]]
