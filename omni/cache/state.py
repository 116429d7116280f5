"""Step caching decided per request: what a request asked for, and the state it keeps."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from omni.cache.first_block import RowCache
from omni.cache.taylorseer import TaylorRow
from omni.errors import InvalidRequestError
from omni.limits import CACHE_TYPES, DEFAULT_CACHE_THRESHOLDS, MAX_CACHE_THRESHOLD


def check_cache(kind: str | None, threshold: float | None) -> tuple[str | None, float | None]:
    """(type, threshold) with the type's default threshold filled in; raises
    InvalidRequestError (param "cache") for an unknown type or a threshold out of range.

    TaylorSeer follows a fixed schedule (diffusers' defaults): a threshold would mean nothing,
    so one is refused rather than silently ignored."""
    if kind is None:
        return None, None
    if kind not in CACHE_TYPES:
        raise InvalidRequestError(
            f"unknown cache type {kind[:40]!r}; one of {', '.join(CACHE_TYPES)}", param="cache"
        )
    if kind not in DEFAULT_CACHE_THRESHOLDS:
        if threshold is not None:
            raise InvalidRequestError(f"a cache of type {kind} takes no threshold", param="cache")
        return kind, None
    if threshold is None:
        threshold = DEFAULT_CACHE_THRESHOLDS[kind]
    if not 0.0 < threshold <= MAX_CACHE_THRESHOLD:
        raise InvalidRequestError(
            f"cache threshold must be above 0 and at most {MAX_CACHE_THRESHOLD:g}, got {threshold}",
            param="cache",
        )
    return kind, threshold


@dataclass(slots=True)
class RequestCache:
    """One request's step cache: a row state per (branch, denoiser), and its tally.

    A RowCache for First-Block Cache, a TaylorRow for TaylorSeer (a step it predicts counts as
    skipped: its hooked modules did not run for it)."""

    kind: str  # "fbcache" or "taylorseer"
    threshold: float | None = None  # fbcache's
    rows: dict[Hashable, RowCache | TaylorRow] = field(default_factory=dict)
    skipped_steps: int = 0  # steps whose conditional row skipped the remaining blocks / predicted
    skipped_rows: int = 0  # rows (conditional or unconditional) that skipped

    def row(self, uncond: bool, denoiser: Hashable) -> RowCache | TaylorRow:
        key = (uncond, denoiser)
        if key not in self.rows:
            self.rows[key] = TaylorRow() if self.kind == "taylorseer" else RowCache()
        return self.rows[key]

    def record(self, uncond: bool, skipped: bool) -> None:
        if skipped:
            self.skipped_rows += 1
            if not uncond:
                self.skipped_steps += 1

    def forget(self) -> None:
        """Drop the cached tensors (the request left, or memory ran out); keep the tally."""
        self.rows.clear()

    @property
    def nbytes(self) -> int:
        return sum(row.nbytes for row in self.rows.values())
