"""Replicas' counters added up into the one EngineStats that /v1/stats and /metrics show."""

from __future__ import annotations

from omni.engine import EngineStats

SUMMED = (
    "num_running",
    "num_waiting",
    "num_steps_run",
    "num_finished",
    "num_failed",
    "num_aborted",
    "num_previews",
    "num_rows_run",
    "num_tokens_run",
    "step_cache_bytes",
)
HIGHEST = ("max_batch_size_seen", "max_step_cache_bytes")


def merge_stats(replicas: list[EngineStats]) -> EngineStats:
    """Counts add up, maxima take the highest; the budget and policy are each replica's own, so
    they are shown when all replicas agree."""
    total = EngineStats()
    for stats in replicas:
        for name in SUMMED:
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        for name in HIGHEST:
            setattr(total, name, max(getattr(total, name), getattr(stats, name)))
        for size, count in stats.batch_size_counts.items():
            total.batch_size_counts[size] = total.batch_size_counts.get(size, 0) + count
    for name in ("scheduling_policy", "max_num_batched_tokens", "forward_profile"):
        values = {getattr(stats, name) for stats in replicas}
        if len(values) == 1:
            setattr(total, name, values.pop())
    return total
