from __future__ import annotations

import itertools

import pytest

from omni.errors import EngineOverloadedError
from omni.request import GenerationParams, Request, RequestStatus
from omni.scheduler import RunnerOutput, Scheduler, SchedulerConfig

_ids = itertools.count()


def make_request(num_steps: int = 4, key: object = "64x64", rows: int = 1) -> Request:
    return Request(
        request_id=f"req-{next(_ids)}",
        params=GenerationParams(prompt="p"),
        step_keys=(key,) * num_steps,
        num_rows=rows,
    )


def run_step(scheduler: Scheduler, failed: dict[str, str] | None = None):
    output = scheduler.schedule()
    done = scheduler.update(output, RunnerOutput(failed=failed or {}))
    return output, done


def run_until_idle(scheduler: Scheduler, limit: int = 1000) -> list[Request]:
    finished = []
    for _ in range(limit):
        if not scheduler.has_work:
            return finished
        finished += run_step(scheduler)[1]
    raise AssertionError("scheduler did not drain")


def test_new_request_runs_its_first_step_in_the_next_batch():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=8))
    long = make_request(num_steps=40)
    scheduler.add(long)
    for _ in range(10):
        run_step(scheduler)
    short = make_request(num_steps=2)
    scheduler.add(short)
    output, _ = run_step(scheduler)
    assert output.prepare == [short]
    assert short in output.denoise and long in output.denoise
    assert short.step_index == 1 and long.step_index == 11


def test_short_request_admitted_late_finishes_first():
    scheduler = Scheduler(SchedulerConfig())
    long, short = make_request(num_steps=40), make_request(num_steps=2)
    scheduler.add(long)
    for _ in range(10):
        run_step(scheduler)
    scheduler.add(short)
    assert run_until_idle(scheduler) == [short, long]


def test_requests_with_different_step_counts_share_batches():
    scheduler = Scheduler(SchedulerConfig())
    requests = [make_request(num_steps=n) for n in (2, 5, 9)]
    for request in requests:
        scheduler.add(request)
    output, _ = run_step(scheduler)
    assert output.denoise == requests


def test_batch_is_capped_and_every_request_progresses():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=3))
    requests = [make_request(num_steps=4) for _ in range(7)]
    for request in requests:
        scheduler.add(request)
    sizes = []
    for _ in range(3):
        output, _ = run_step(scheduler)
        sizes.append(len(output.denoise))
    assert sizes == [3, 3, 3]
    assert sorted(r.step_index for r in requests) == [1, 1, 1, 1, 1, 2, 2]


def test_cfg_requests_count_two_rows():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4))
    for request in [make_request(rows=2), make_request(rows=2), make_request(rows=1)]:
        scheduler.add(request)
    output, _ = run_step(scheduler)
    assert sum(r.num_rows for r in output.denoise) == 4


def test_a_request_larger_than_the_budget_still_runs():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=1))
    request = make_request(rows=2)
    scheduler.add(request)
    assert run_step(scheduler)[0].denoise == [request]


def test_incompatible_shapes_alternate_and_none_blocks_the_queue():
    scheduler = Scheduler(SchedulerConfig())
    big = [make_request(key="64x64", num_steps=6) for _ in range(3)]
    wide = make_request(key="32x64", num_steps=3)
    for request in [*big, wide]:
        scheduler.add(request)
    keys = []
    for _ in range(6):
        output, _ = run_step(scheduler)
        keys.append({r.batch_key for r in output.denoise})
    assert all(len(k) == 1 for k in keys)
    assert keys[:4] == [{"64x64"}, {"32x64"}, {"64x64"}, {"32x64"}]
    run_until_idle(scheduler)
    assert all(r.status == RequestStatus.FINISHED for r in [*big, wide])


def test_no_group_starves_under_a_stream_of_another_group():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=2))
    lonely = make_request(key="odd", num_steps=5)
    scheduler.add(lonely)
    for _ in range(12):
        scheduler.add(make_request(key="common", num_steps=3))
        run_step(scheduler)
    assert lonely.status == RequestStatus.FINISHED


def test_step_keys_can_change_group_midway():
    scheduler = Scheduler(SchedulerConfig())
    a = Request("a", GenerationParams(prompt="p"), step_keys=("hi", "hi", "lo", "lo"))
    b = Request("b", GenerationParams(prompt="p"), step_keys=("lo",) * 4)
    scheduler.add(a)
    scheduler.add(b)
    batches = [run_step(scheduler)[0].denoise for _ in range(4)]
    assert [a] in batches[:2] and [b] in batches[:2]
    assert any(set(batch) == {a, b} for batch in batches[2:])


def test_finished_denoising_is_decoded_on_the_next_step():
    scheduler = Scheduler(SchedulerConfig())
    request = make_request(num_steps=1)
    scheduler.add(request)
    output, done = run_step(scheduler)
    assert request.status == RequestStatus.DECODING and not done
    output, done = run_step(scheduler)
    assert output.decode == [request] and done == [request]
    assert request.status == RequestStatus.FINISHED
    assert not scheduler.has_work


def test_failed_batch_fails_only_its_requests():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=2))
    first, second, other = make_request(), make_request(), make_request(key="other")
    for request in (first, second, other):
        scheduler.add(request)
    output = scheduler.schedule()
    assert output.denoise == [first, second]
    done = scheduler.update(
        output, RunnerOutput({first.request_id: "boom", second.request_id: "boom"})
    )
    assert set(done) == {first, second}
    assert first.status == RequestStatus.FAILED and first.error == "boom"
    run_until_idle(scheduler)
    assert other.status == RequestStatus.FINISHED


def test_abort_frees_the_slot_at_the_step_boundary():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1))
    first, second = make_request(num_steps=50), make_request(num_steps=2)
    scheduler.add(first)
    scheduler.add(second)
    run_step(scheduler)
    assert scheduler.running == [first] and list(scheduler.waiting) == [second]
    assert scheduler.abort(first.request_id) is first
    assert first.status == RequestStatus.ABORTED
    output, _ = run_step(scheduler)
    assert output.denoise == [second]
    assert scheduler.abort("missing") is None


def test_request_aborted_while_its_step_ran_is_not_resurrected():
    scheduler = Scheduler(SchedulerConfig())
    request = make_request()
    scheduler.add(request)
    output = scheduler.schedule()
    scheduler.abort(request.request_id)
    assert scheduler.update(output, RunnerOutput()) == []
    assert request.status == RequestStatus.ABORTED and not scheduler.has_work


def test_full_waiting_queue_refuses():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1, max_num_waiting=2))
    for _ in range(3):  # the first takes the free running slot at the next step
        scheduler.add(make_request())
    with pytest.raises(EngineOverloadedError):
        scheduler.add(make_request())
    assert len(scheduler.waiting) == 3


def test_requests_added_together_are_all_queued_or_all_refused():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1, max_num_waiting=2))
    scheduler.add(make_request(), make_request())
    scheduler.schedule()  # one runs, one waits: room for one more
    with pytest.raises(EngineOverloadedError):
        scheduler.add(make_request(), make_request())
    assert len(scheduler.waiting) == 1
    scheduler.add(make_request())
    assert len(scheduler.waiting) == 2


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        SchedulerConfig(max_batch_size=0)


def test_queue_time_ends_when_the_first_step_starts():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1))
    first, second = make_request(num_steps=2), make_request(num_steps=2)
    scheduler.add(first)
    scheduler.add(second)
    output = scheduler.schedule()
    assert first.first_step_time is not None and second.first_step_time is None
    scheduler.update(output, RunnerOutput())
    run_until_idle(scheduler)
    assert second.first_step_time >= first.finish_time


def test_a_two_row_request_that_does_not_fit_leaves_room_for_one_row_ones():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4))
    first, guided, plain = make_request(rows=3), make_request(rows=2), make_request(rows=1)
    for request in (first, guided, plain):
        scheduler.add(request)
    output, _ = run_step(scheduler)
    assert output.denoise == [first, plain]
    assert run_step(scheduler)[0].denoise[0] is guided  # it waited longest: first next time
