from __future__ import annotations

import copy
import json

import pytest

from benchmarks.sim_clock import Loop, Pool
from benchmarks.sim_profile import FORMAT, ProfileError, load_profile, parse_profile
from benchmarks.sim_run import Driver, SimOptions, server_factory
from benchmarks.workload import RequestClass, RequestSpec, Workload, sample_requests
from omni.scheduler import Scheduler
from omni.scheduler.policy import POLICIES

FORWARD_MS = 10.0
STEPS = 5
ZERO = {
    "encode": {"fixed_ms": 0, "per_request_ms": 0, "per_text_call_ms": 0, "per_prompt_ms": 0},
    "decode": {"fixed_ms": 0, "per_output_ms": 0, "per_megapixel_ms": 0},
    "response": {"fixed_ms": 0, "per_megapixel_ms": 0},
    "pipeline": {"fixed_ms": 0, "per_step_ms": 0},
}


def profile_data(**changes) -> dict:
    """A forward that costs FORWARD_MS whatever its rows; nothing else costs anything."""
    data = {
        "format": FORMAT,
        "name": "test",
        "tokens": {"px_per_token": 16, "text_tokens": 64, "shared_forward": True},
        "default_size": [64, 64],
        "forward": {"model": "interpolate", "points": [[1, 80, FORWARD_MS], [64, 80, FORWARD_MS]]},
        "capacity": None,
        **copy.deepcopy(ZERO),
    }
    data.update(changes)
    return data


ONE_CLASS = Workload("one", (RequestClass("only", 1, 64, 64, STEPS),))
MIXED = Workload(
    "mixed",
    (
        RequestClass("short", 2, 64, 64, 2),
        RequestClass("long", 1, 64, 64, 9),
        RequestClass("big", 1, 128, 128, 4),
    ),
)
OMNI = SimOptions(max_num_batched_tokens=None, profile_seconds=0, max_batch_size=1)


def driver(label: str, workload: Workload, options: SimOptions = OMNI, **changes) -> Driver:
    profile = parse_profile(profile_data(**changes))
    return Driver(profile, workload, server_factory(label, profile, options))


def test_the_simulated_engine_drives_the_real_scheduler(monkeypatch):
    calls = []
    real = Scheduler.schedule

    def spy(self):
        calls.append(self)
        return real(self)

    monkeypatch.setattr(Scheduler, "schedule", spy)
    sim = driver("omni-fcfs", ONE_CLASS)
    sim.closed(sample_requests(ONE_CLASS, 4, seed=0), concurrency=2)
    assert calls and all(s is sim.server.scheduler for s in calls)
    assert sum(sim.server.batch_counts.values()) == sim.server.scheduler.num_steps == 4 * STEPS


def finish_order(sim: Driver, count: int) -> list[str]:
    specs = [RequestSpec(ONE_CLASS.classes[0], f"prompt {i}", i) for i in range(count)]
    finished = sim.open(specs, [0.0] * count)
    return [r.spec.prompt for r in sorted(finished, key=lambda r: r.end)]


def test_a_patched_policy_changes_what_the_simulator_predicts(monkeypatch):
    options = SimOptions(max_num_batched_tokens=None, profile_seconds=0, max_batch_size=1,
                         max_num_running=1)  # fmt: skip
    first_come = finish_order(driver("omni-fcfs", ONE_CLASS, options), 5)
    assert first_come == [f"prompt {i}" for i in range(5)]
    monkeypatch.setitem(POLICIES, "fcfs", lambda request: (-request.arrival_time,))
    last_come = finish_order(driver("omni-fcfs", ONE_CLASS, options), 5)
    assert last_come[0] == "prompt 4" and last_come != first_come


@pytest.mark.parametrize("label", ["omni-fcfs", "omni-shortest", "baseline-batched"])
def test_every_request_comes_back_once(label):
    options = SimOptions(max_num_batched_tokens=400, profile_seconds=0, max_batch_size=8)
    encode = {"fixed_ms": 1, "per_request_ms": 0.1, "per_text_call_ms": 2, "per_prompt_ms": 1}
    decode = {"fixed_ms": 1, "per_output_ms": 0.5, "per_megapixel_ms": 100}
    sim = driver(label, MIXED, options, encode=encode, decode=decode, capacity=1.0)
    specs = sample_requests(MIXED, 300, seed=3)
    finished = sim.closed(specs, concurrency=24)
    assert sorted(id(r.spec) for r in finished) == sorted(id(s) for s in specs)
    assert all(r.status == 200 and r.end >= r.server_done >= r.send for r in finished)
    assert all(r.first_step is not None and r.send <= r.first_step <= r.end for r in finished)
    if label.startswith("omni"):
        assert not sim.server.scheduler.has_work and not sim.server.owner
        assert sum(size * n for size, n in sim.server.batch_counts.items()) == sum(
            r.spec.request_class.num_inference_steps for r in finished
        )


def test_request_level_batching_matches_the_analytic_figure():
    """One class, nothing but the forward: every call batches 8 requests and takes STEPS
    forwards, so each request waits exactly one call and 8 finish per call."""
    sim = driver("baseline-batched", ONE_CLASS, SimOptions(baseline_max_batch=8))
    count = 8 * 25
    finished = sim.closed(sample_requests(ONE_CLASS, count, seed=1), concurrency=8)
    call_s = STEPS * FORWARD_MS / 1000
    assert all(r.end - r.send == pytest.approx(call_s) for r in finished)
    duration = max(r.end for r in finished) - min(r.send for r in finished)
    assert count / duration == pytest.approx(8 / call_s)
    assert sim.server.batch_counts == {8: 25}


def test_processor_sharing_stretches_concurrent_work():
    loop = Loop(capacity=1.0)
    done = {}
    loop.work(1.0, lambda: done.setdefault("a", loop.now))
    loop.work(1.0, lambda: done.setdefault("b", loop.now))
    loop.run()
    assert done == {"a": pytest.approx(2.0), "b": pytest.approx(2.0)}
    assert Pool(None).rate() == 1.0


def test_work_finishes_late_in_a_long_simulation():
    """Far from zero a float clock cannot bring remaining work to exactly zero."""
    loop = Loop(capacity=1.0)
    done = []
    for start in (98_765.4321, 98_765.4321 + 1e-7):
        loop.at(start, lambda: loop.work(0.3, lambda: done.append(loop.now)))
    loop.run()
    assert done == [pytest.approx(98_766.0321, abs=1e-6)] * 2


@pytest.mark.parametrize(
    "change",
    [
        {"format": "something-else"},
        {"forward": {"points": []}},
        {"forward": {"points": [[1, 80]]}},
        {"forward": {"points": [[0, 80, 3.0]]}},
        {
            "encode": {
                "fixed_ms": -1,
                "per_request_ms": 0,
                "per_text_call_ms": 0,
                "per_prompt_ms": 0,
            }
        },
        {"decode": {"fixed_ms": 1}},
        {"default_size": "64x64"},
        {"capacity": "lots"},
    ],
)
def test_the_profile_loader_rejects_malformed_profiles(change):
    with pytest.raises(ProfileError):
        parse_profile(profile_data(**change))


def test_the_profile_loader_rejects_a_missing_section_and_bad_json(tmp_path):
    data = profile_data()
    del data["pipeline"]
    with pytest.raises(ProfileError, match="pipeline"):
        parse_profile(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(profile_data())[:-5])
    with pytest.raises(ProfileError):
        load_profile(path)


@pytest.mark.parametrize("name", ["cpu-omni-tiny", "h100-flux.1-dev", "h100-qwen-image"])
def test_the_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.forward.ms(4, profile.tokens_per_row(*profile.default_size)) > 0
