"""What one load level measured: per-request records in, latency percentiles and rates out."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(slots=True)
class RequestRecord:
    """One request as the client saw it; times are seconds on the client's monotonic clock."""

    class_name: str
    num_images: int
    start: float
    end: float
    ok: bool
    status: int = 0
    error: str | None = None
    queue_time_s: float | None = None  # server: arrival -> first denoising step
    inference_time_s: float | None = None  # server: arrival -> decoded output

    @property
    def latency_s(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Summary:
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(slots=True)
class LevelResult:
    """One load level: a concurrency (closed loop) or a request rate (open loop)."""

    mode: str  # "concurrency" | "rate"
    load: float
    num_requests: int
    num_ok: int
    duration_s: float
    images_per_s: float
    requests_per_s: float
    latency: Summary | None
    queue_time: Summary | None  # from the x-queue-time-s header, when the server sends it
    inference_time: Summary | None
    slo_attainment: dict[str, float] = field(default_factory=dict)  # "k=2" -> fraction
    per_class_latency: dict[str, Summary] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    records: list[RequestRecord] = field(default_factory=list)  # kept to re-score SLOs later
    # From the server's /v1/stats during this level: requests per forward (omni) or per
    # pipeline call (baselines) -> how many times.
    batch_size_counts: dict[str, int] = field(default_factory=dict)

    @property
    def mean_batch(self) -> float | None:
        calls = sum(self.batch_size_counts.values())
        if not calls:
            return None
        return sum(int(size) * n for size, n in self.batch_size_counts.items()) / calls

    @property
    def num_failed(self) -> int:
        return self.num_requests - self.num_ok

    def rescore_slo(self, standalone_s: dict[str, float], factors: Sequence[float]) -> None:
        """SLO attainment against other standalone latencies (e.g. the fastest server's)."""
        self.slo_attainment = {
            f"k={k:g}": slo_attainment(self.records, standalone_s, k) for k in factors
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolating linearly between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    return Summary(
        count=len(values),
        mean=statistics.fmean(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        max=max(values),
    )


def slo_attainment(
    records: Sequence[RequestRecord], standalone_s: dict[str, float], factor: float
) -> float:
    """Share of requests that succeeded within `factor` times their class's standalone latency.

    Failed requests count as misses: a server cannot raise its score by dropping work.
    """
    if not records:
        return 0.0
    met = sum(1 for r in records if r.ok and r.latency_s <= factor * standalone_s[r.class_name])
    return met / len(records)


def summarize_level(
    mode: str,
    load: float,
    records: Sequence[RequestRecord],
    standalone_s: dict[str, float],
    slo_factors: Sequence[float],
) -> LevelResult:
    ok = [r for r in records if r.ok]
    duration = (max(r.end for r in records) - min(r.start for r in records)) if records else 0.0
    rate = 1 / duration if duration > 0 else 0.0
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = f"{r.status} {r.error or ''}".strip()[:120]
            errors[key] = errors.get(key, 0) + 1
    per_class: dict[str, list[float]] = {}
    for r in ok:
        per_class.setdefault(r.class_name, []).append(r.latency_s)
    return LevelResult(
        mode=mode,
        load=load,
        num_requests=len(records),
        num_ok=len(ok),
        duration_s=duration,
        images_per_s=sum(r.num_images for r in ok) * rate,
        requests_per_s=len(ok) * rate,
        latency=summarize([r.latency_s for r in ok]),
        queue_time=summarize([r.queue_time_s for r in ok if r.queue_time_s is not None]),
        inference_time=summarize(
            [r.inference_time_s for r in ok if r.inference_time_s is not None]
        ),
        slo_attainment={f"k={k:g}": slo_attainment(records, standalone_s, k) for k in slo_factors},
        per_class_latency={name: summarize(v) for name, v in sorted(per_class.items())},
        errors=errors,
        records=list(records),
    )
