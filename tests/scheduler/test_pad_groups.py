"""Rows of different pad groups run as separate calls of one step (Qwen-Image-Edit's edits and
generations): the padding rule weighs a request only against its own group, the budget sums
each group's padded cost."""

from __future__ import annotations

from omni.scheduler import Scheduler, SchedulerConfig
from tests.scheduler.helpers import make_request, run_step


def grouped(group, **kwargs):
    request = make_request(**kwargs)
    request.pad_group = group
    return request


def test_far_apart_sizes_of_different_groups_share_the_step():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=100_000))
    edit, generation = grouped((1, 64, 64), tokens=4200), grouped(None, tokens=40)
    scheduler.add(edit, generation)
    run_step(scheduler)
    assert run_step(scheduler)[0].denoise == [edit, generation]


def test_within_a_group_far_apart_sizes_still_take_turns():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=100_000))
    large, small = grouped("a", num_steps=4, tokens=4200), grouped("a", num_steps=4, tokens=40)
    scheduler.add(large, small)
    run_step(scheduler)
    batches = [run_step(scheduler)[0].denoise for _ in range(2)]
    assert batches == [[large], [small]]


def test_the_budget_sums_each_groups_padded_tokens():
    # 2 rows x 300 in one group plus 1 row x 100 in another: 700, not 3 x 300 = 900.
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=700))
    a, b = grouped("a", tokens=300), grouped("a", tokens=290)
    other = grouped("b", tokens=100)
    scheduler.add(a, b, other)
    assert run_step(scheduler)[0].prepare == [a, b, other]
    tight = Scheduler(SchedulerConfig(max_num_batched_tokens=699))
    a, b, other = grouped("a", tokens=300), grouped("a", tokens=290), grouped("b", tokens=100)
    tight.add(a, b, other)
    assert tight.schedule().prepare == [a, b]
