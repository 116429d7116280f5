"""A one-line progress bar on stderr; on a non-terminal it prints a line every quarter instead."""

from __future__ import annotations

import sys
import time
from typing import TextIO

REDRAW_INTERVAL_S = 0.1
WIDTH = 30


class ProgressBar:
    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.is_terminal = self.stream.isatty()
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_quarter = 0

    def advance(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += not ok
        self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)
        if self.is_terminal:
            self.stream.write("\n")
        self.stream.flush()

    def line(self) -> str:
        filled = WIDTH * min(self.done, self.total) // self.total
        bar = "#" * filled + "." * (WIDTH - filled)
        elapsed = time.monotonic() - self.started
        return f"{self.label} [{bar}] {self.done}/{self.total} {elapsed:6.1f}s failed {self.failed}"

    def _draw(self, final: bool) -> None:
        now = time.monotonic()
        if self.is_terminal:
            if final or now - self._last_draw >= REDRAW_INTERVAL_S:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self._last_draw = now
            return
        quarter = 4 * self.done // self.total
        if quarter > self._last_quarter or (final and self._last_quarter < 4):
            self._last_quarter = max(quarter, 4 if final else quarter)
            self.stream.write(self.line() + "\n")
            self.stream.flush()
