"""The engine's histograms as plain bucket counts, kept by an observer.

One engine serving HTTP reports them in /metrics through its server; a replica on Ray posts
them to its board with its status, and the front ends add them up. So the counts are plain
data, small enough to post every half second: non-cumulative, trailing empty buckets left out.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass

from omni.engine.observer import EngineObserver
from omni.request import Request

REQUEST_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
STEP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEPS = (1, 2, 4, 8, 16, 20, 28, 32, 50, 64, 100, 128, 250, 500)
PIXELS = (4096, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824)


@dataclass(frozen=True, slots=True)
class HistogramSpec:
    name: str  # the series' name, without the omni: prefix
    documentation: str
    buckets: tuple[float, ...]  # upper bounds, ascending; one more bucket holds the rest


E2E = HistogramSpec("e2e_request_latency_seconds", "Arrival to output", REQUEST_SECONDS)
QUEUE = HistogramSpec("request_queue_time_seconds", "Arrival to first step", REQUEST_SECONDS)
INFERENCE = HistogramSpec("request_inference_time_seconds", "First step to output", REQUEST_SECONDS)
STEP = HistogramSpec("denoise_step_seconds", "One batched denoise forward", STEP_SECONDS)
BATCH = HistogramSpec("step_batch_size", "Requests per denoise forward", BATCH_SIZES)
STEPS_PER_REQUEST = HistogramSpec("steps_per_request", "Denoise steps of a finished request", STEPS)
OUTPUT_PIXELS = HistogramSpec(
    "output_pixels", "Width x height x frames of a finished request", PIXELS
)
DECODE = HistogramSpec("vae_decode_seconds", "One VAE decode call", STEP_SECONDS)
ENGINE_HISTOGRAMS = (E2E, QUEUE, INFERENCE, STEP, BATCH, STEPS_PER_REQUEST, OUTPUT_PIXELS, DECODE)


@dataclass(frozen=True, slots=True)
class HistogramCounts:
    """One histogram's observations: `counts[i]` fell in bucket i (the one past the last bound
    last), trailing empty buckets left out; `sum` adds up the values observed."""

    counts: tuple[int, ...] = ()
    sum: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self, num_buckets: int) -> list[int]:
        """Observations at or under each of `num_buckets` bounds, then the total (+Inf)."""
        padded = [*self.counts, *[0] * (num_buckets + 1 - len(self.counts))]
        running, out = 0, []
        for count in padded:
            running += count
            out.append(running)
        return out


def add_counts(histograms: Iterable[HistogramCounts]) -> HistogramCounts:
    """Several engines' observations of one histogram, as one."""
    counts: list[int] = []
    total = 0.0
    for histogram in histograms:
        counts += [0] * (len(histogram.counts) - len(counts))
        for index, count in enumerate(histogram.counts):
            counts[index] += count
        total += histogram.sum
    return HistogramCounts(tuple(counts), total)


def add_histograms(engines: Iterable[dict[str, HistogramCounts]]) -> dict[str, HistogramCounts]:
    """Each histogram added up over engines; one an engine lacks counts as empty."""
    engines = list(engines)
    return {
        spec.name: add_counts(engine[spec.name] for engine in engines if spec.name in engine)
        for spec in ENGINE_HISTOGRAMS
    }


class HistogramObserver(EngineObserver):
    """Keeps the engine's histograms. Called from the engine's threads: an observation is a
    bisect and two adds under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {spec.name: [0] * (len(spec.buckets) + 1) for spec in ENGINE_HISTOGRAMS}
        self._sums = dict.fromkeys(self._counts, 0.0)

    def observe(self, spec: HistogramSpec, value: float) -> None:
        index = bisect_left(spec.buckets, value)  # the first bound the value is at or under
        with self._lock:
            self._counts[spec.name][index] += 1
            self._sums[spec.name] += value

    def histograms(self) -> dict[str, HistogramCounts]:
        with self._lock:
            return {
                name: trimmed(counts, self._sums[name]) for name, counts in self._counts.items()
            }

    def on_forward(self, seconds: float, batch_size: int) -> None:
        self.observe(STEP, seconds)
        self.observe(BATCH, batch_size)

    def on_stage(self, kind: str, seconds: float, num_requests: int) -> None:
        if kind == "decode":
            self.observe(DECODE, seconds)

    def on_finished(self, request: Request) -> None:
        self.observe(STEPS_PER_REQUEST, request.num_steps)
        params = request.params
        pixels = (params.width or 1) * (params.height or 1) * (params.num_frames or 1)
        self.observe(OUTPUT_PIXELS, pixels)
        if request.finish_time is None:
            return
        self.observe(E2E, request.finish_time - request.arrival_time)
        if request.first_step_time is not None:
            self.observe(QUEUE, request.first_step_time - request.arrival_time)
            self.observe(INFERENCE, request.finish_time - request.first_step_time)


def trimmed(counts: list[int], total: float) -> HistogramCounts:
    end = len(counts)
    while end and not counts[end - 1]:
        end -= 1
    return HistogramCounts(tuple(counts[:end]), total)
