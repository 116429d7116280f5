"""Encoding and decoding beside the forward: a burst never holds up the running batch."""

from __future__ import annotations

import pytest

from benchmarks.stage_jitter import run_burst
from omni.engine.profile import knee
from tests.conftest import run

LONG_CALL_S = 0.05


@pytest.fixture(scope="module")
def bursts(tiny_wan_dir):
    """16 running requests; 32 admissions and 4 video decodes arrive at once. Both modes."""
    return {
        overlap: run(run_burst(str(tiny_wan_dir), overlap), timeout=600)
        for overlap in (True, False)
    }


def test_admissions_and_video_decodes_do_not_delay_the_next_denoise_step(bursts):
    burst = bursts[True]
    long_calls = [s for s in burst.stages if s.end - s.start > LONG_CALL_S]
    assert {s.kind for s in long_calls} >= {"decode"}
    assert all(burst.forwards_within(call) >= 1 for call in long_calls)
    longest = max(s.end - s.start for s in burst.stages) * 1000
    assert max(burst.intervals_ms) < longest / 2


def test_inside_the_step_the_same_burst_stalls_the_batch(bursts):
    """The check above can fail: run inline, a long decode has no forward beside it."""
    burst = bursts[False]
    long_calls = [s for s in burst.stages if s.end - s.start > LONG_CALL_S]
    assert any(burst.forwards_within(call) == 0 for call in long_calls)


def test_the_budget_is_the_fewest_rows_that_reach_nine_tenths_of_the_best_throughput():
    curve = [(1, 2.4), (2, 2.4), (4, 2.9), (8, 3.7), (16, 6.0), (32, 10.2), (64, 22.4)]
    assert knee(curve) == 32
    noisy = [(1, 96.0), (2, 104.0), (4, 208.0), (8, 230.0), (16, 523.0)]
    assert knee(noisy) == 8
    assert knee(curve[:2]) is None  # too few points to tell


def test_the_start_up_profile_sets_the_budget_and_stats_show_it(tiny_flux_dir):
    from tests.engine.helpers import running_engine

    async def scenario():
        async with running_engine(tiny_flux_dir, profile_seconds=5) as engine:
            return engine.stats()

    stats = run(scenario())
    assert stats.max_num_batched_tokens is not None and stats.max_num_batched_tokens >= 80
    assert "knee at" in stats.forward_profile
