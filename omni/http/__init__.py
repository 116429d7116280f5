"""The OpenAI-compatible HTTP front end over the engine."""

from omni.http.app import build_app
from omni.http.config import ServerConfig
from omni.http.server import RunningServer, serve, start_server

__all__ = ["RunningServer", "ServerConfig", "build_app", "serve", "start_server"]
