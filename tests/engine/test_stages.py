"""Encoding and decoding beside the forward: a burst never holds up the running batch."""

from __future__ import annotations

import pytest

from benchmarks.stage_jitter import run_burst
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
