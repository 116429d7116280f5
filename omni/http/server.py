"""Running the app on a socket; a handler is cancelled when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web

from omni.engine import AsyncEngine, EngineState
from omni.http.app import build_app
from omni.http.config import ServerConfig
from omni.http.connection import AppRunner
from omni.http.state import ENGINE
from omni.storage import StorageInUseError

logger = logging.getLogger("omni.serve")

GRACEFUL_SHUTDOWN_S = 10.0
READY_POLL_S = 0.1


@dataclass(slots=True)
class RunningServer:
    app: web.Application
    runner: web.AppRunner
    url: str  # with the real port when the config asked for port 0
    announcer: asyncio.Task[None]

    @property
    def engine(self) -> AsyncEngine:
        return self.app[ENGINE]

    async def stop(self) -> None:
        self.announcer.cancel()
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    """Listen at once; the model loads in the background and one log line says when it is ready.

    Until then /health and model routes answer 503.
    """
    app = build_app(config)
    # aiohttp lets a handler run on after its client disconnects unless asked; cancelling it
    # closes its engine streams, which aborts their requests at the next step boundary.
    runner = AppRunner(
        app,
        send_timeout=config.send_timeout,
        keepalive_timeout=config.keepalive_timeout,
        handler_cancellation=True,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        shutdown_timeout=GRACEFUL_SHUTDOWN_S,
    )
    try:
        await runner.setup()  # a failed startup step still has the steps before it undone
        await web.TCPSite(runner, config.host, config.port).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"
    announcer = asyncio.create_task(announce_when_ready(app[ENGINE], url))
    return RunningServer(app, runner, url, announcer)


async def announce_when_ready(engine: AsyncEngine, url: str) -> None:
    # Polled rather than awaited in a thread: a server stopped while the model still loads
    # must not leave a thread that the event loop's shutdown would wait for.
    started = time.monotonic()
    while engine.state == EngineState.LOADING:
        await asyncio.sleep(READY_POLL_S)
    name = engine.config.name
    if engine.state == EngineState.DEAD:
        logger.error("omni could not start %s: %s (%s/health answers 503)", name, engine.error, url)
        return
    elapsed = time.monotonic() - started
    logger.info("omni is ready: serving %s at %s (loaded in %.1f s)", name, url, elapsed)


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT or SIGTERM, then drain handlers for a few seconds and stop the engine."""
    try:
        server = await start_server(config)
    except StorageInUseError as exc:
        raise SystemExit(f"omni.serve: {exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
    finally:
        await server.stop()
