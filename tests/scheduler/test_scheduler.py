from __future__ import annotations

import pytest

from omni.errors import EngineOverloadedError
from omni.request import GenerationParams, Request, RequestStatus
from omni.scheduler import RunnerOutput, Scheduler, SchedulerConfig
from tests.scheduler.helpers import make_request, run_step, run_until_idle


def test_a_new_request_is_encoded_then_joins_the_running_batch_at_the_next_step():
    scheduler = Scheduler(SchedulerConfig())
    long = make_request(num_steps=40)
    scheduler.add(long)
    for _ in range(10):
        run_step(scheduler)
    short = make_request(num_steps=2)
    scheduler.add(short)
    output, _ = run_step(scheduler)
    assert output.prepare == [short] and output.denoise == [long]
    output, _ = run_step(scheduler)
    assert output.denoise == [long, short]


def test_short_request_admitted_late_finishes_first():
    scheduler = Scheduler(SchedulerConfig())
    long, short = make_request(num_steps=40), make_request(num_steps=2)
    scheduler.add(long)
    for _ in range(10):
        run_step(scheduler)
    scheduler.add(short)
    assert run_until_idle(scheduler) == [short, long]


def test_requests_with_different_step_counts_and_sizes_share_batches():
    scheduler = Scheduler(SchedulerConfig())
    requests = [make_request(num_steps=n, tokens=t) for n, t in ((2, 80), (5, 100), (9, 68))]
    scheduler.add(*requests)
    run_step(scheduler)
    output, _ = run_step(scheduler)
    assert output.denoise == requests


def test_every_running_request_takes_part_in_every_step_while_it_fits():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=800))
    requests = [make_request(num_steps=10, tokens=100) for _ in range(10)]
    scheduler.add(*requests)
    output, _ = run_step(scheduler)
    assert output.prepare == requests[:8]  # admitted into the budget: 8 x 100 tokens
    for _ in range(5):
        output, _ = run_step(scheduler)
        assert output.denoise == requests[:8]
    assert all(r.status == RequestStatus.WAITING for r in requests[8:])


def test_the_budget_counts_rows_times_the_longest_row():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=400))
    big, small = make_request(tokens=200), make_request(tokens=180)
    guided = make_request(rows=2, tokens=190)
    scheduler.add(big, small, guided)
    output, _ = run_step(scheduler)
    # big + small is 2 rows x 200 = 400; the guided request would make it 4 rows x 200.
    assert output.prepare == [big, small]


def test_sizes_far_apart_take_turns_instead_of_padding_the_small_to_the_large():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=100_000))
    large, near = make_request(num_steps=6, tokens=4608), make_request(num_steps=6, tokens=4096)
    small = [make_request(num_steps=6, tokens=1536) for _ in range(3)]
    scheduler.add(large, near, *small)
    run_step(scheduler)
    batches = [set(run_step(scheduler)[0].denoise) for _ in range(4)]
    # Padding a 1536-token row to 4608 would waste more than a quarter of the forward.
    assert batches == [{large, near}, set(small), {large, near}, set(small)]


def test_the_row_cap_holds_whatever_the_token_budget():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4))
    scheduler.add(make_request(rows=2), make_request(rows=2), make_request(rows=1))
    run_step(scheduler)
    output, _ = run_step(scheduler)
    assert sum(r.num_rows for r in output.denoise) == 4


def test_a_request_larger_than_the_budget_still_runs_alone():
    scheduler = Scheduler(SchedulerConfig(max_num_batched_tokens=10, max_batch_size=1))
    request = make_request(rows=2, tokens=64)
    scheduler.add(request)
    run_step(scheduler)
    assert run_step(scheduler)[0].denoise == [request]


def test_denoisers_take_turns_and_none_blocks_the_queue():
    scheduler = Scheduler(SchedulerConfig())
    high = [make_request(key="high", num_steps=6) for _ in range(3)]
    low = make_request(key="low", num_steps=3)
    scheduler.add(*high, low)
    run_step(scheduler)
    keys = [{r.batch_key for r in run_step(scheduler)[0].denoise} for _ in range(4)]
    assert keys == [{"high"}, {"low"}, {"high"}, {"low"}]
    run_until_idle(scheduler)
    assert all(r.status == RequestStatus.FINISHED for r in [*high, low])


def test_step_keys_can_change_denoiser_midway():
    scheduler = Scheduler(SchedulerConfig())
    a = Request("a", GenerationParams(prompt="p"), step_keys=("hi", "hi", "lo", "lo"))
    b = Request("b", GenerationParams(prompt="p"), step_keys=("lo",) * 4)
    scheduler.add(a, b)
    run_step(scheduler)
    batches = [run_step(scheduler)[0].denoise for _ in range(4)]
    assert [a] in batches[:2] and [b] in batches[:2]
    assert any(set(batch) == {a, b} for batch in batches[2:])


def test_finished_denoising_is_decoded_on_the_next_step():
    scheduler = Scheduler(SchedulerConfig())
    request = make_request(num_steps=1)
    scheduler.add(request)
    run_step(scheduler)
    output, done = run_step(scheduler)
    assert request.status == RequestStatus.DECODING and not done
    output, done = run_step(scheduler)
    assert output.decode == [request] and done == [request]
    assert request.status == RequestStatus.FINISHED
    assert not scheduler.has_work


def test_a_decode_in_progress_keeps_the_request_until_the_stage_reports_it():
    scheduler = Scheduler(SchedulerConfig())
    request = make_request(num_steps=1)
    scheduler.add(request)
    run_step(scheduler)
    run_step(scheduler)
    output = scheduler.schedule()
    assert output.decode == [request]
    assert scheduler.update(output, RunnerOutput()) == []  # the decode is still running
    assert scheduler.schedule().is_empty
    assert scheduler.update(output, RunnerOutput(decoded=[request.request_id])) == [request]


def test_failed_batch_fails_only_its_requests():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=2))
    first, second, other = make_request(), make_request(), make_request(key="other")
    scheduler.add(first, second, other)
    run_step(scheduler)
    output = scheduler.schedule()
    assert output.denoise == [first, second]
    failed = {first.request_id: "boom", second.request_id: "boom"}
    done = scheduler.update(output, RunnerOutput(failed=failed))
    assert set(done) == {first, second}
    assert first.status == RequestStatus.FAILED and first.error == "boom"
    run_until_idle(scheduler)
    assert other.status == RequestStatus.FINISHED


def test_a_failed_encode_fails_only_that_request():
    scheduler = Scheduler(SchedulerConfig())
    bad, good = make_request(), make_request()
    scheduler.add(bad, good)
    _, done = run_step(scheduler, failed={bad.request_id: "tokenizer broke"})
    assert done == [bad] and bad.error == "tokenizer broke"
    run_until_idle(scheduler)
    assert good.status == RequestStatus.FINISHED


def test_abort_frees_the_slot_at_the_step_boundary():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1))
    first, second = make_request(num_steps=50), make_request(num_steps=2)
    scheduler.add(first, second)
    run_step(scheduler)
    assert scheduler.running == [first] and list(scheduler.waiting) == [second]
    assert scheduler.abort(first.request_id) is first
    assert first.status == RequestStatus.ABORTED
    assert run_step(scheduler)[0].prepare == [second]
    assert scheduler.abort("missing") is None


def test_request_aborted_while_its_step_ran_is_not_resurrected():
    scheduler = Scheduler(SchedulerConfig())
    request = make_request()
    scheduler.add(request)
    run_step(scheduler)
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
    scheduler.schedule()  # one is admitted, one waits: room for one more
    with pytest.raises(EngineOverloadedError):
        scheduler.add(make_request(), make_request())
    assert len(scheduler.waiting) == 1
    scheduler.add(make_request())
    assert len(scheduler.waiting) == 2


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_batch_size", 0),
        ("max_num_batched_tokens", 0),
        ("max_starvation_steps", 0),
        ("policy", "random"),
    ],
)
def test_bad_config_is_refused(field, value):
    with pytest.raises(ValueError, match=field.removeprefix("max_") if field != "policy" else "po"):
        SchedulerConfig(**{field: value})


def test_queue_time_ends_when_the_first_step_starts():
    scheduler = Scheduler(SchedulerConfig(max_num_running=1))
    first, second = make_request(num_steps=2), make_request(num_steps=2)
    scheduler.add(first, second)
    run_step(scheduler)
    assert first.first_step_time is None
    run_step(scheduler)
    assert first.first_step_time is not None and second.first_step_time is None
    run_until_idle(scheduler)
    assert second.first_step_time >= first.finish_time


def test_a_two_row_request_that_does_not_fit_leaves_room_for_one_row_ones():
    scheduler = Scheduler(SchedulerConfig(max_batch_size=4))
    first, guided, plain = make_request(rows=3), make_request(rows=2), make_request(rows=1)
    scheduler.add(first, guided, plain)
    output, _ = run_step(scheduler)
    assert output.prepare == [first, plain]
    run_until_idle(scheduler)
    assert guided.status == RequestStatus.FINISHED
