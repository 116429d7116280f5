"""/metrics series read at scrape time from what the engine (or the replicas' board) holds:
each replica's counters, and the engine's histograms, in total and per replica."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from omni.engine import EngineService, EngineStats, ReplicaStatus
from omni.engine.histograms import (
    ENGINE_HISTOGRAMS,
    HistogramCounts,
    HistogramObserver,
    HistogramSpec,
    add_histograms,
)

PREFIX = "omni:"
MODEL = ("model_name",)
REPLICA_PREFIX = PREFIX + "replica_"
REPLICA_LABELS = [*MODEL, "replica"]
EMPTY = HistogramCounts()


class ReplicaCollector(Collector):
    """Each replica's counters, labelled `replica`, read at scrape time; none for one engine."""

    def __init__(self, engine: EngineService, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name

    def collect(self) -> Iterator[Metric]:
        replicas = self.engine.replicas()
        if not replicas:
            return
        for name, documentation, kind, read in REPLICA_SERIES:
            family = kind(REPLICA_PREFIX + name, documentation, labels=REPLICA_LABELS)
            for replica in replicas:
                family.add_metric([self.model_name, replica.replica], read(replica))
            yield family


REPLICA_SERIES: tuple[tuple[str, str, Any, Callable[[ReplicaStatus], float]], ...] = (
    (
        "up",
        "1 while the replica's engine is ready",
        GaugeMetricFamily,
        lambda r: r.state == "ready",
    ),
    (
        "num_requests_running",
        "Requests being denoised or decoded",
        GaugeMetricFamily,
        lambda r: r.stats.num_running,
    ),
    (
        "num_requests_waiting",
        "Requests waiting to be scheduled",
        GaugeMetricFamily,
        lambda r: r.stats.num_waiting,
    ),
    (
        "requests_finished",
        "Requests that finished with an output",
        CounterMetricFamily,
        lambda r: r.stats.num_finished,
    ),
    ("requests_failed", "Requests that failed", CounterMetricFamily, lambda r: r.stats.num_failed),
    ("requests_aborted", "Requests aborted", CounterMetricFamily, lambda r: r.stats.num_aborted),
    ("steps", "Denoise forwards run", CounterMetricFamily, lambda r: r.stats.num_steps_run),
)


class EngineCounterCollector(Collector):
    """Requests out of the engine by how, and partial images decoded, from the engine's own
    counters (a pool's: its replicas' added up) at scrape time."""

    def __init__(self, engine: EngineService, model_name: str) -> None:
        self.engine = engine
        self.model_name = model_name

    def describe(self) -> Iterator[Metric]:
        """The series without reading the engine: the registry asks before it has started."""
        return self.families(EngineStats())

    def collect(self) -> Iterator[Metric]:
        return self.families(self.engine.stats())

    def families(self, stats: EngineStats) -> Iterator[Metric]:
        success = CounterMetricFamily(
            PREFIX + "request_success",
            "Requests that left the engine, by how",
            labels=[*MODEL, "finished_reason"],
        )
        success.add_metric([self.model_name, "finished"], stats.num_finished)
        success.add_metric([self.model_name, "failed"], stats.num_failed)
        success.add_metric([self.model_name, "aborted"], stats.num_aborted)
        yield success
        partial = CounterMetricFamily(
            PREFIX + "partial_images",
            "Partial images (previews) decoded for streamed requests",
            labels=MODEL,
        )
        partial.add_metric([self.model_name], stats.num_previews)
        yield partial


class HistogramCollector(Collector):
    """The engine's histograms under their own names: a local engine's (`local`), or with
    replicas the sum of theirs, buckets, counts and sums added up; then each replica's under
    `omni:replica_<name>` with a `replica` label, so a sum over a family never counts twice."""

    def __init__(self, engine: EngineService, local: HistogramObserver, model_name: str) -> None:
        self.engine = engine
        self.local = local
        self.model_name = model_name

    def collect(self) -> Iterator[Metric]:
        replicas = self.engine.replicas()
        posted = [replica.histograms for replica in replicas]
        totals = add_histograms(posted) if replicas else self.local.histograms()
        for spec in ENGINE_HISTOGRAMS:
            family = HistogramMetricFamily(PREFIX + spec.name, spec.documentation, labels=MODEL)
            add_histogram(family, [self.model_name], spec, totals[spec.name])
            yield family
        if not replicas:
            return
        for spec in ENGINE_HISTOGRAMS:
            name = REPLICA_PREFIX + spec.name
            family = HistogramMetricFamily(name, spec.documentation, labels=REPLICA_LABELS)
            for replica, histograms in zip(replicas, posted, strict=True):
                counts = histograms.get(spec.name, EMPTY)
                add_histogram(family, [self.model_name, replica.replica], spec, counts)
            yield family


def add_histogram(
    family: HistogramMetricFamily, labels: list[str], spec: HistogramSpec, counts: HistogramCounts
) -> None:
    bounds = [floatToGoString(bound) for bound in (*spec.buckets, math.inf)]
    cumulative = counts.cumulative(len(spec.buckets))
    family.add_metric(labels, list(zip(bounds, cumulative, strict=True)), counts.sum)
