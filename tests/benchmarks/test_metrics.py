from __future__ import annotations

import numpy as np
import pytest

from benchmarks.metrics import (
    RequestRecord,
    percentile,
    slo_attainment,
    summarize,
    summarize_level,
)


def record(name: str, start: float, end: float, ok: bool = True, images: int = 1):
    return RequestRecord(name, num_images=images, start=start, end=end, ok=ok)


@pytest.mark.parametrize("q", [0, 10, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear_interpolation(q):
    values = list(np.random.default_rng(q).exponential(2.0, size=37))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_rejects_empty_input_and_out_of_range_q():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_of_nothing_is_none_and_of_one_value_is_that_value():
    assert summarize([]) is None
    one = summarize([0.25])
    assert (one.mean, one.p50, one.p99, one.max) == (0.25, 0.25, 0.25, 0.25)


def test_slo_counts_requests_within_k_times_their_class_standalone_latency():
    standalone = {"small": 1.0, "large": 4.0}
    records = [
        record("small", 0, 1.5),  # within 2x
        record("small", 0, 2.5),  # outside 2x
        record("large", 0, 7.9),  # within 2x of 4
        record("large", 0, 8.1),  # outside
    ]
    assert slo_attainment(records, standalone, 2.0) == 0.5
    assert slo_attainment(records, standalone, 3.0) == 1.0


def test_failed_requests_count_as_slo_misses_however_fast():
    records = [record("small", 0, 0.1, ok=False), record("small", 0, 0.1)]
    assert slo_attainment(records, {"small": 1.0}, 10.0) == 0.5


def test_level_throughput_is_completed_images_over_first_start_to_last_end():
    records = [
        record("a", 10.0, 11.0, images=2),
        record("a", 10.5, 12.0, images=1),
        record("a", 11.0, 14.0, images=4, ok=False),
    ]
    level = summarize_level("concurrency", 2, records, {"a": 1.0}, [2.0])
    assert level.duration_s == 4.0
    assert level.images_per_s == pytest.approx(3 / 4)
    assert level.requests_per_s == pytest.approx(2 / 4)
    assert (level.num_ok, level.num_failed) == (2, 1)
    assert level.latency.p50 == pytest.approx(1.25)
    assert level.slo_attainment == {"k=2": pytest.approx(2 / 3)}
    assert sum(level.errors.values()) == 1


def test_server_timing_headers_are_summarized_only_when_sent():
    with_header = record("a", 0, 1)
    with_header.queue_time_s = 0.2
    level = summarize_level("rate", 1.0, [with_header, record("a", 0, 1)], {"a": 1.0}, [])
    assert level.queue_time.count == 1 and level.queue_time.p50 == 0.2
    assert level.inference_time is None
