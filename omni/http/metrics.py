"""GET /metrics: Prometheus text, named after vLLM's metrics with an `omni:` prefix.

Each app has a registry of its own, so several servers in one process (the tests) stay apart.
The engine reports through an `EngineObserver` from its own thread; prometheus_client's
metrics are thread-safe and an observation is a lock and an add, cheap enough for the step loop.
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

from omni.engine import AsyncEngine
from omni.engine.observer import EngineObserver
from omni.request import Request

PREFIX = "omni:"
MODEL = ("model_name",)
FINISHED_REASONS = ("finished", "failed", "aborted")
REQUEST_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800)
STEP_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STEPS = (1, 2, 4, 8, 16, 20, 28, 32, 50, 64, 100, 128, 250, 500)
PIXELS = (4096, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 1073741824)
UNMATCHED_ROUTE = "unmatched"  # 404s: no route, so no canonical path


class ServerMetrics(EngineObserver):
    """Every series of one server, each labelled with its served model name."""

    def __init__(self, model_name: str) -> None:
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
        self.e2e = self._histogram(
            "e2e_request_latency_seconds", "Arrival to output", REQUEST_SECONDS
        )
        self.queue = self._histogram(
            "request_queue_time_seconds", "Arrival to first step", REQUEST_SECONDS
        )
        self.inference = self._histogram(
            "request_inference_time_seconds", "First step to output", REQUEST_SECONDS
        )
        self.step = self._histogram(
            "denoise_step_seconds", "One batched denoise forward", STEP_SECONDS
        )
        self.batch = self._histogram("step_batch_size", "Requests per denoise forward", BATCH_SIZES)
        self.steps = self._histogram(
            "steps_per_request", "Denoise steps of a finished request", STEPS
        )
        self.pixels = self._histogram(
            "output_pixels", "Width x height x frames of a finished request", PIXELS
        )
        self.decode = self._histogram("vae_decode_seconds", "One VAE decode call", STEP_SECONDS)
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

    def _histogram(self, name: str, documentation: str, buckets: tuple[float, ...]) -> Any:
        """The model's child: observations need no label lookup in the step loop."""
        metric = Histogram(
            PREFIX + name, documentation, MODEL, buckets=buckets, registry=self.registry
        )
        return metric.labels(self.model_name)

    def watch(self, engine: AsyncEngine) -> None:
        """Queue gauges read the engine's counters at scrape time."""
        self.running.labels(self.model_name).set_function(lambda: engine.stats().num_running)
        self.waiting.labels(self.model_name).set_function(lambda: engine.stats().num_waiting)

    def on_forward(self, seconds: float, batch_size: int) -> None:
        self.step.observe(seconds)
        self.batch.observe(batch_size)

    def on_stage(self, kind: str, seconds: float, num_requests: int) -> None:
        if kind == "decode":
            self.decode.observe(seconds)
        elif kind == "preview":
            self.partial_images.inc(num_requests)

    def on_finished(self, request: Request) -> None:
        self.success.labels(self.model_name, "finished").inc()
        self.steps.observe(request.num_steps)
        params = request.params
        self.pixels.observe((params.width or 1) * (params.height or 1) * (params.num_frames or 1))
        if request.finish_time is None:
            return
        self.e2e.observe(request.finish_time - request.arrival_time)
        if request.first_step_time is not None:
            self.queue.observe(request.first_step_time - request.arrival_time)
            self.inference.observe(request.finish_time - request.first_step_time)

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


def install(app: web.Application, engine: AsyncEngine) -> None:
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
