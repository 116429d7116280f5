"""A replica's running calls by the id their front end gave them, so that a call the front end
cancelled stops even where Serve's cancellation was lost (ray-project/ray#52533: a cancel that
lands while Serve hands the call to a replica can leave it running, here for every step of an
image nobody is waiting for)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class RunningCalls:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancelled: frozenset[str] = frozenset()

    @contextmanager
    def running(self, call_id: str | None) -> Iterator[None]:
        """Around a call's work, in the task that does it; a call already cancelled is not
        started (its cancel reached the board before the call reached this replica)."""
        if call_id is None:
            yield
            return
        if call_id in self._cancelled:
            raise asyncio.CancelledError(f"call {call_id} was cancelled by its front end")
        task = asyncio.current_task()
        assert task is not None
        self._tasks[call_id] = task
        try:
            yield
        finally:
            self._tasks.pop(call_id, None)

    def cancel(self, cancelled: Iterable[str]) -> list[str]:
        """The board's cancelled calls: cancel the tasks of those running here (the engine
        aborts their requests at its next step). Returns the ids cancelled now."""
        self._cancelled = frozenset(cancelled)
        hit = [call_id for call_id in self._tasks if call_id in self._cancelled]
        for call_id in hit:
            self._tasks.pop(call_id).cancel()
        return hit
