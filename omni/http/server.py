"""Running the app on a socket; a handler is cancelled when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web

from omni.engine import EngineService, EngineState
from omni.http.app import build_app
from omni.http.config import ServerConfig
from omni.http.connection import AppRunner
from omni.http.front_ends import FrontEnds
from omni.http.shutdown import DRAIN
from omni.http.state import ENGINE
from omni.http.videos import VIDEO_JOBS
from omni.logs import quiet_libraries
from omni.storage import StorageInUseError

logger = logging.getLogger("omni.serve")

GRACEFUL_SHUTDOWN_S = 10.0
READY_POLL_S = 0.1


@dataclass(slots=True)
class RunningServer:
    app: web.Application
    runner: AppRunner
    url: str  # with the real port when the config asked for port 0
    announcer: asyncio.Task[None]

    @property
    def engine(self) -> EngineService:
        return self.app[ENGINE]

    @property
    def port(self) -> int:
        return self.runner.addresses[0][1]

    async def drain(self, timeout: float) -> bool:
        """Refuse new requests (503) and wait up to `timeout` s for requests and video jobs in
        flight; queued jobs stay queued. False if some were still running at the timeout."""
        drain = self.app[DRAIN]
        drain.is_draining = True
        jobs = self.app[VIDEO_JOBS]
        jobs.stop_dispatching()
        return await drain.wait_idle(lambda: len(jobs.running), timeout)

    async def stop(self, grace: float = GRACEFUL_SHUTDOWN_S) -> None:
        """Close; handlers still running get `grace` seconds, then are cancelled."""
        self.announcer.cancel()
        self.runner.set_shutdown_timeout(grace)
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    """Listen at once; the model loads in the background and one log line says when it is ready.

    Until then /health and model routes answer 503. A further front end of --api-server-count
    listens only once it has joined the replicas: every process on the shared port can serve.
    """
    started = time.monotonic()
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
        if config.front_end_index > 0:
            await app[ENGINE].wait_ready()
        shared = config.api_server_count > 1  # SO_REUSEPORT: the kernel spreads connections
        await web.TCPSite(runner, config.host, config.port, reuse_port=shared or None).start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"
    announcer = asyncio.create_task(announce_when_ready(app[ENGINE], url, started))
    return RunningServer(app, runner, url, announcer)


async def announce_when_ready(engine: EngineService, url: str, started: float) -> None:
    # Polled rather than awaited in a thread: a server stopped while the model still loads
    # must not leave a thread that the event loop's shutdown would wait for.
    while engine.state == EngineState.LOADING:
        await asyncio.sleep(READY_POLL_S)
    name = engine.config.name
    if engine.state == EngineState.DEAD:
        logger.error("omni could not start %s: %s (%s/health answers 503)", name, engine.error, url)
        return
    elapsed = time.monotonic() - started
    logger.info("omni is ready: serving %s at %s (loaded in %.1f s)", name, url, elapsed)


def run(config: ServerConfig) -> None:
    """`serve` on a fresh event loop (uvloop where there is one), with the server's logging."""
    where = f"[front end {config.front_end_index}] " if config.api_server_count > 1 else ""
    log_format = f"%(asctime)s %(levelname)s {where}%(message)s"
    logging.basicConfig(level=logging.INFO, format=log_format)
    quiet_libraries()
    try:
        import uvloop
    except ImportError:  # not built for Windows
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))


async def serve(config: ServerConfig) -> None:
    """Run until a signal. SIGTERM drains first (up to --shutdown-timeout); SIGINT, or a second
    signal while draining, stops at once, giving handlers a few seconds. The first of several
    front ends passes each signal on to the others and waits for them."""
    try:
        server = await start_server(config)
    except StorageInUseError as exc:
        raise SystemExit(f"omni.serve: {exc}") from None
    front_ends = None
    if config.api_server_count > 1 and config.front_end_index == 0:
        front_ends = FrontEnds(config, server.engine, server.port)
        front_ends.start()
    signals: asyncio.Queue[int] = asyncio.Queue()

    def on_signal(signum: int) -> None:
        signals.put_nowait(signum)
        if front_ends is not None:
            front_ends.signal(signum)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
            loop.add_signal_handler(signum, on_signal, signum)
    grace = GRACEFUL_SHUTDOWN_S
    try:
        if await signals.get() == signal.SIGTERM:
            grace = await drain_until_done_or_signalled(server, signals, config.shutdown_timeout)
    finally:
        if front_ends is not None:  # before the replicas and the cluster go
            await front_ends.stop(config.shutdown_timeout + GRACEFUL_SHUTDOWN_S)
        await server.stop(grace)


async def drain_until_done_or_signalled(
    server: RunningServer, signals: asyncio.Queue[int], timeout: float
) -> float:
    """Drain; the grace left for handlers afterwards (none once the timeout is spent)."""
    logger.info(
        "SIGTERM: finishing the work in flight for up to %g s; new requests get 503", timeout
    )
    drained = asyncio.create_task(server.drain(timeout))
    signalled = asyncio.create_task(signals.get())
    await asyncio.wait([drained, signalled], return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if not drained.done():
        drained.cancel()
        logger.info("a second signal: stopping now")
        return GRACEFUL_SHUTDOWN_S
    if not drained.result():
        logger.warning(
            "work still running after %g s is stopped; its jobs resume after a restart", timeout
        )
    return 0.0
