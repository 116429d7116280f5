"""The start-up profile behind the default token budget: its curve, its knee, its time limit."""

from __future__ import annotations

from omni.engine.profile import ROUNDS, knee, measure_curve
from tests.conftest import run


class Forwards:
    """A forward whose cost is `ms_per_row` a row; `slow(call, rows)` multiplies one call's."""

    def __init__(self, ms_per_row: float, slow=lambda call, rows: 1.0):
        self.ms_per_row, self.slow = ms_per_row, slow
        self.calls: list[int] = []

    def __call__(self, rows: int) -> float:
        seconds = self.ms_per_row * rows / 1000 * self.slow(len(self.calls), rows)
        self.calls.append(rows)
        return seconds

    @property
    def spent_s(self) -> float:
        return sum(self.ms_per_row * rows / 1000 for rows in self.calls)


def test_the_budget_is_the_fewest_rows_that_reach_nine_tenths_of_the_best_throughput():
    curve = [(1, 2.4), (2, 2.4), (4, 2.9), (8, 3.7), (16, 6.0), (32, 10.2), (64, 22.4)]
    assert knee(curve) == 32
    noisy = [(1, 96.0), (2, 104.0), (4, 208.0), (8, 230.0), (16, 523.0)]
    assert knee(noisy) == 8
    assert knee(curve[:2]) is None  # too few points to tell


def test_a_cheap_model_is_measured_up_to_the_row_cap_in_every_round():
    forwards = Forwards(ms_per_row=0.1)
    points = measure_curve(forwards, max_rows=64, time_limit_s=10)
    assert [rows for rows, _ in points] == [1, 2, 4, 8, 16, 32, 64]
    assert all(forwards.calls.count(rows) == 2 + ROUNDS for rows, _ in points)
    assert all(abs(ms - 0.1 * rows) < 1e-9 for rows, ms in points)


def test_a_process_still_warming_up_skews_no_size():
    """A fresh process's first forwards are slow, whatever their size. Timed one size after
    another, the smallest sizes would take all the slow calls and look costly, pushing the knee
    up; interleaved rounds after a first pass give every size warm calls."""
    points = measure_curve(
        Forwards(0.1, lambda call, rows: 2.0 if call < 20 else 1.0), max_rows=64, time_limit_s=10
    )
    assert all(abs(ms - 0.1 * rows) < 1e-9 for rows, ms in points)


def test_a_slow_spell_as_long_as_a_sizes_timed_calls_moves_no_point():
    """Timed one size after another, these ROUNDS slow calls would all be one size's; in
    interleaved rounds they fall on several sizes of one round, and each has faster rounds."""
    for start in range(14, 14 + 2 * 7):  # after the first pass (2 calls a size), anywhere
        spell = range(start, start + ROUNDS)
        forwards = Forwards(0.1, lambda call, rows, spell=spell: 3.0 if call in spell else 1.0)
        points = measure_curve(forwards, max_rows=64, time_limit_s=10)
        assert all(abs(ms - 0.1 * rows) < 1e-9 for rows, ms in points), start


def test_an_expensive_model_stops_doubling_where_one_more_round_would_not_fit_the_limit():
    forwards = Forwards(ms_per_row=100)
    points = measure_curve(forwards, max_rows=64, time_limit_s=10)
    sizes = [rows for rows, _ in points]
    assert sizes == [1, 2, 4, 8, 16]  # 32 rows twice, then in a round, would not fit
    assert forwards.spent_s <= 10
    assert all(forwards.calls.count(rows) >= 3 for rows in sizes)  # the first pass, a round


def test_a_slow_first_forward_does_not_stop_the_doubling_early():
    """A process's very first forward also initialises (on a GPU: the context, kernel
    selection). Judged by that call the profile would stop at one size, with no knee."""
    forwards = Forwards(100, lambda call, rows: 31.0 if call == 0 else 1.0)  # 3 s more
    points = measure_curve(forwards, max_rows=64, time_limit_s=10)
    assert [rows for rows, _ in points] == [1, 2, 4, 8]
    assert all(abs(ms - 100 * rows) < 1e-6 for rows, ms in points)


def test_the_start_up_profile_sets_the_budget_and_stats_show_it(tiny_flux_dir):
    from tests.engine.helpers import running_engine

    async def scenario():
        async with running_engine(tiny_flux_dir, profile_seconds=5) as engine:
            return engine.stats()

    stats = run(scenario())
    assert stats.max_num_batched_tokens is not None and stats.max_num_batched_tokens >= 80
    assert "knee at" in stats.forward_profile
