"""The aiohttp application: routes, middlewares and the engine's lifetime, in one place."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from omni.engine import AsyncEngine, EngineService
from omni.http import chat, edits, front_ends, images, info, metrics, playground, videos
from omni.http.auth import api_key_middleware
from omni.http.config import ServerConfig
from omni.http.errors import error_middleware
from omni.http.openapi import get_openapi
from omni.http.request_ids import add_request_id
from omni.http.shutdown import DRAIN, Drain
from omni.http.state import ENGINE, SERVER_CONFIG, STARTED_AT


def build_app(config: ServerConfig) -> web.Application:
    """The app; its engine starts loading in the background when the app starts up."""
    drain = Drain()
    middlewares = [metrics.middleware, error_middleware, drain.middleware]
    if config.api_key is not None:
        is_open = playground.is_page_path if config.playground else None
        middlewares.append(api_key_middleware(config.api_key, is_open))
    # aiohttp refuses a body of exactly client_max_size bytes; max_body_bytes is allowed.
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes + 1)
    app[SERVER_CONFIG] = config
    app[DRAIN] = drain
    app[ENGINE] = make_engine(config)
    app[STARTED_AT] = int(time.time())
    app.cleanup_ctx.append(run_engine)
    app.on_response_prepare.append(add_request_id)
    if config.api_server_count > 1:
        app.on_response_prepare.append(front_ends.header_hook(config))
    add_routes(app)
    if config.playground:
        playground.add_playground_routes(app)
    metrics.install(app, app[ENGINE])
    return app


def make_engine(config: ServerConfig) -> EngineService:
    """The engine in this process, or its replicas on a Ray cluster."""
    if not config.uses_replicas:
        return AsyncEngine(config.engine)
    from omni.cluster import ReplicaPool  # Ray is an optional extra

    return ReplicaPool(
        config.engine,
        config.data_parallel_size,
        config.ray_address,
        join_only=config.front_end_index > 0,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", info.health)
    app.router.add_get("/v1/models", info.list_models)
    app.router.add_get("/v1/stats", info.engine_stats)
    app.router.add_get("/openapi.json", get_openapi)
    app.router.add_post("/v1/images/generations", images.create_images)
    app.router.add_post("/v1/images/edits", edits.create_image_edits)
    app.router.add_post("/v1/chat/completions", chat.create_chat_completion)
    videos.add_video_routes(app)


async def run_engine(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    await engine.start()  # returns at once; the model loads on the engine's own thread
    yield
    await engine.stop()
