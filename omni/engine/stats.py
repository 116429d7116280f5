from __future__ import annotations

from dataclasses import dataclass, field, replace

from omni.limits import DEFAULT_SCHEDULING_POLICY


@dataclass(slots=True)
class EngineStats:
    """Counters the actor keeps; the asyncio side reads copies."""

    num_running: int = 0
    num_waiting: int = 0
    num_steps_run: int = 0
    num_finished: int = 0
    num_failed: int = 0
    num_aborted: int = 0
    num_previews: int = 0  # partial images decoded for streaming clients
    max_batch_size_seen: int = 0
    batch_size_counts: dict[int, int] = field(default_factory=dict)  # requests per forward
    num_rows_run: int = 0  # rows over all forwards, CFG rows included
    num_tokens_run: int = 0  # padded tokens over all forwards
    scheduling_policy: str = DEFAULT_SCHEDULING_POLICY
    max_num_batched_tokens: int | None = None  # the budget in force
    forward_profile: str | None = None  # the start-up profile the budget came from
    step_cache_bytes: int = 0  # held by running requests' step caches after the last step
    max_step_cache_bytes: int = 0

    def record_batch(self, size: int, rows: int, tokens: int) -> None:
        self.num_steps_run += 1
        self.num_rows_run += rows
        self.num_tokens_run += tokens
        self.max_batch_size_seen = max(self.max_batch_size_seen, size)
        self.batch_size_counts[size] = self.batch_size_counts.get(size, 0) + 1

    def record_step_cache(self, held: int) -> None:
        self.step_cache_bytes = held
        self.max_step_cache_bytes = max(self.max_step_cache_bytes, held)

    def copy(self) -> EngineStats:
        return replace(self, batch_size_counts=dict(self.batch_size_counts))
