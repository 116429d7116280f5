"""GET /metrics: Prometheus text, named after vLLM's metrics with an `omni:` prefix.

Each app has a registry of its own, so several servers in one process (the tests) stay apart.
The engine reports through an `EngineObserver` from its own thread: the server is one that keeps
the engine's histograms as plain counts (omni.engine.histograms), a lock and an add per
observation, cheap enough for the step loop. Those, and the engine's counters, are read at
scrape time: a local engine's, or the replicas' as they post them to the board, in total and
each replica's (metric_collectors).
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
from omni.http.metric_collectors import (
    MODEL,
    PREFIX,
    EngineCounterCollector,
    HistogramCollector,
    ReplicaCollector,
)

UNMATCHED_ROUTE = "unmatched"  # 404s: no route, so no canonical path


class ServerMetrics(HistogramObserver):
    """Every series of one server, each labelled with its served model name."""

    def __init__(self, model_name: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.registry = CollectorRegistry(auto_describe=True)
        self.running = self._gauge("num_requests_running", "Requests being denoised or decoded")
        self.waiting = self._gauge("num_requests_waiting", "Requests waiting to be scheduled")
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
        """Queue gauges and request counters read the engine's counters (a pool's totals) at
        scrape time."""
        self.running.labels(self.model_name).set_function(lambda: engine.stats().num_running)
        self.waiting.labels(self.model_name).set_function(lambda: engine.stats().num_waiting)
        self.registry.register(ReplicaCollector(engine, self.model_name))
        self.registry.register(EngineCounterCollector(engine, self.model_name))
        self.registry.register(HistogramCollector(engine, self, self.model_name))

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
