"""GET /metrics: Prometheus text, named after vLLM's metrics with an `omni:` prefix.

Each app has a registry of its own, so several servers in one process (the tests) stay apart.
The engine reports through an `EngineObserver` from its own thread; prometheus_client's
metrics are thread-safe and an observation is a lock and an add, cheap enough for the step loop.
The engine's histograms are kept as plain counts (omni.engine.histograms) and read at scrape
time: a local engine's, or each replica's as posted to the board (see metric_collectors).
HTTP requests are counted by the route's canonical path (`/v1/videos/{video_id}`), never the
raw URL, so ids cannot blow up the number of series.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from omni.engine import EngineService
from omni.engine.histograms import REQUEST_SECONDS, HistogramObserver
from omni.http.metric_collectors import MODEL, PREFIX, HistogramCollector, ReplicaCollector
from omni.request import Request

FINISHED_REASONS = ("finished", "failed", "aborted")
UNMATCHED_ROUTE = "unmatched"  # 404s: no route, so no canonical path


class ServerMetrics(HistogramObserver):
    """Every series of one server, each labelled with its served model name."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.running = self._gauge("num_requests_running", "Requests being denoised or decoded")
        self.waiting = self._gauge("num_requests_waiting", "Requests waiting to be scheduled")
        self.success = Counter(
            PREFIX + "request_success",
            "Requests that left the engine, by how",
            (*MODEL, "finished_reason"),
            registry=self.registry,
        )
        for reason in FINISHED_REASONS:  # zeros, so a rate() has a start
            self.success.labels(model_name, reason)
        self.partial_images = Counter(
            PREFIX + "partial_images",
            "Partial images (previews) decoded for streamed requests",
            MODEL,
            registry=self.registry,
        ).labels(model_name)
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP requests by route and status",
            (*MODEL, "method", "route", "status"),
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            PREFIX + "http_request_duration_seconds",
            "HTTP request handling time by route",
            (*MODEL, "method", "route"),
            buckets=REQUEST_SECONDS,
            registry=self.registry,
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(PREFIX + name, documentation, MODEL, registry=self.registry)

    def watch(self, engine: EngineService) -> None:
        """Queue gauges read the engine's counters (a pool's totals) at scrape time."""
        self.running.labels(self.model_name).set_function(lambda: engine.stats().num_running)
        self.waiting.labels(self.model_name).set_function(lambda: engine.stats().num_waiting)
        self.registry.register(ReplicaCollector(engine, self.model_name))
        self.registry.register(HistogramCollector(engine, self, self.model_name))

    def on_stage(self, kind: str, seconds: float, num_requests: int) -> None:
        super().on_stage(kind, seconds, num_requests)
        if kind == "preview":
            self.partial_images.inc(num_requests)

    def on_finished(self, request: Request) -> None:
        super().on_finished(request)
        self.success.labels(self.model_name, "finished").inc()

    def on_failed(self, reason: str, count: int = 1) -> None:
        self.success.labels(self.model_name, reason).inc(count)

    def record_http(self, request: web.Request, status: int, seconds: float) -> None:
        route = route_of(request)
        self.http_requests.labels(self.model_name, request.method, route, str(status)).inc()
        self.http_seconds.labels(self.model_name, request.method, route).observe(seconds)


METRICS = web.AppKey("metrics", ServerMetrics)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return UNMATCHED_ROUTE if resource is None else resource.canonical


def install(app: web.Application, engine: EngineService) -> None:
    """Metrics for this app: the engine reports to them, GET /metrics shows them."""
    metrics = ServerMetrics(engine.config.name)
    metrics.watch(engine)
    engine.observer = metrics
    app[METRICS] = metrics
    app.router.add_get("/metrics", get_metrics)


async def get_metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Outermost, so it counts what the error and API-key middlewares answer too."""
    start = time.monotonic()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # what error_middleware lets through (redirects)
        request.app[METRICS].record_http(request, exc.status, time.monotonic() - start)
        raise
    request.app[METRICS].record_http(request, response.status, time.monotonic() - start)
    return response
