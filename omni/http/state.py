"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from aiohttp import web

from omni.engine import AsyncEngine
from omni.http.config import ServerConfig
from omni.interpolation.worker import Interpolator

SERVER_CONFIG = web.AppKey("server_config", ServerConfig)
ENGINE = web.AppKey("engine", AsyncEngine)
INTERPOLATOR = web.AppKey("interpolator", Interpolator)  # RIFE, beside the engine's threads
STARTED_AT = web.AppKey("started_at", int)  # unix time, the `created` of /v1/models

REQUEST_ID = web.RequestKey("request_id", str)
