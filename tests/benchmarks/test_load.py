from __future__ import annotations

import asyncio
import statistics
from itertools import pairwise

import pytest

from benchmarks.client import check_body, check_local_url, image_body
from benchmarks.load import closed_loop, open_loop, poisson_arrivals
from benchmarks.metrics import RequestRecord
from benchmarks.workload import load_workload, sample_requests
from tests.conftest import run


def test_poisson_arrivals_are_bounded_in_count_and_duration():
    assert len(poisson_arrivals(100.0, 50, seed=0, max_duration_s=1e9)) == 50
    capped = poisson_arrivals(10.0, 10_000, seed=0, max_duration_s=2.0)
    assert capped and max(capped) < 2.0 and len(capped) < 10_000


def test_poisson_arrivals_are_seeded_increasing_and_average_one_over_rate():
    arrivals = poisson_arrivals(4.0, 4000, seed=3, max_duration_s=1e9)
    assert arrivals == poisson_arrivals(4.0, 4000, seed=3, max_duration_s=1e9)
    gaps = [b - a for a, b in pairwise([0.0, *arrivals])]
    assert min(gaps) > 0
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.1)


def test_poisson_rate_must_be_positive():
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 5, seed=0, max_duration_s=1.0)


class FakeServer:
    """Answers after a short sleep and remembers how many requests were in flight at most."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.seen = []

    async def send(self, spec) -> RequestRecord:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.seen.append(spec)
        await asyncio.sleep(0.002)
        self.in_flight -= 1
        return RequestRecord(spec.request_class.name, 1, start=0.0, end=0.002, ok=True)


def specs(count: int):
    return sample_requests(load_workload("mixed-steps"), count, seed=0)


def test_closed_loop_sends_every_request_with_at_most_concurrency_in_flight():
    server = FakeServer()
    records = run(closed_loop(server.send, specs(25), concurrency=4, max_duration_s=60))
    assert len(records) == 25
    assert server.max_in_flight == 4
    assert len(set(map(id, server.seen))) == 25


def test_closed_loop_sends_nothing_once_its_duration_is_spent():
    server = FakeServer()
    assert run(closed_loop(server.send, specs(10), concurrency=2, max_duration_s=0)) == []


def test_open_loop_sends_each_request_and_does_not_wait_for_answers():
    server = FakeServer()
    arrivals = [0.0] * 12  # all due at once: an open loop sends them all together
    records = run(open_loop(server.send, specs(12), arrivals))
    assert len(records) == 12
    assert server.max_in_flight == 12


def test_open_loop_stops_at_the_last_arrival():
    server = FakeServer()
    records = run(open_loop(server.send, specs(12), [0.0, 0.001, 0.002]))
    assert len(records) == 3


def test_only_loopback_targets_are_accepted():
    assert check_local_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    for url in ("http://example.com:8000", "http://10.0.0.1:8000", "https://127.0.0.1:1"):
        with pytest.raises(ValueError):
            check_local_url(url)


def test_image_body_carries_the_class_fields_and_leaves_out_unset_ones():
    spec = sample_requests(load_workload("cfg-mix"), 2, seed=0)
    bodies = {s.request_class.name: image_body(s) for s in spec}
    assert bodies["cfg"]["true_cfg_scale"] == 4.0 and bodies["cfg"]["negative_prompt"]
    assert "negative_prompt" not in bodies["no-cfg"]
    assert bodies["no-cfg"]["size"] == "512x512"
    assert bodies["no-cfg"]["num_inference_steps"] == 20


def test_image_answers_must_hold_n_images_to_count_as_success():
    good = b'{"data": [{"b64_json": "aGk="}]}'
    assert check_body(200, good, "image", 1) == (True, None)
    assert not check_body(200, good, "image", 2)[0]
    ok, message = check_body(503, b'{"error": {"message": "busy"}}', "image", 1)
    assert not ok and message == "busy"
