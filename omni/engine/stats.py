from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class EngineStats:
    """Counters the actor keeps; the asyncio side reads copies."""

    num_running: int = 0
    num_waiting: int = 0
    num_steps_run: int = 0
    num_finished: int = 0
    num_failed: int = 0
    num_aborted: int = 0
    max_batch_size_seen: int = 0
    batch_size_counts: dict[int, int] = field(default_factory=dict)  # requests per forward

    def record_batch(self, size: int) -> None:
        self.num_steps_run += 1
        self.max_batch_size_seen = max(self.max_batch_size_seen, size)
        self.batch_size_counts[size] = self.batch_size_counts.get(size, 0) + 1

    def copy(self) -> EngineStats:
        return EngineStats(
            self.num_running,
            self.num_waiting,
            self.num_steps_run,
            self.num_finished,
            self.num_failed,
            self.num_aborted,
            self.max_batch_size_seen,
            dict(self.batch_size_counts),
        )
