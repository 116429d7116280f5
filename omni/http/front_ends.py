"""Several front-end processes on one port (--api-server-count), all sending to one set of
replicas on Ray Serve.

The first front end (index 0) starts or joins the cluster and the replicas as a single server
does. Once they are ready, it starts the others as child processes, each with the cluster's GCS
address: they join the replicas (never start or remove them), open the job store without owning
it (only the first runs video jobs), and bind the same host and port with SO_REUSEPORT only once
they can serve, so the kernel spreads connections over processes that are all ready. The first
forwards its signals to them, waits for them when it stops, and starts again one that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

from omni.engine import EngineService, EngineState
from omni.http.config import ServerConfig

logger = logging.getLogger("omni.serve")

HEADER = "x-omni-front-end"  # which front end answered: its index
WATCH_INTERVAL_S = 1.0
RESTART_DELAY_S = 1.0
STEADY_AFTER_S = 60.0  # a child that ran this long before dying is restarted afresh
MAX_QUICK_RESTARTS = 5  # restarts of a child that keeps dying sooner than that
KILL_WAIT_S = 10.0
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def front_end_info(config: ServerConfig) -> dict[str, int]:
    """What /v1/stats says of the process that answered."""
    return {"index": config.front_end_index, "pid": os.getpid(), "count": config.api_server_count}


def header_hook(config: ServerConfig) -> Any:
    """An `on_response_prepare` hook that names the answering front end on every response."""
    index = str(config.front_end_index)

    async def add_front_end(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[HEADER] = index

    return add_front_end


@dataclass(slots=True)
class Child:
    index: int
    process: BaseProcess
    started: float
    quick_restarts: int = 0


class FrontEnds:
    """The first front end's children: started once the replicas are ready, watched, stopped."""

    def __init__(self, config: ServerConfig, engine: EngineService, port: int) -> None:
        self.config = config
        self.engine = engine
        self.port = port  # the bound one, when the config asked for port 0
        self.children: dict[int, Child] = {}
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")  # no forked Ray or event loop
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._watcher = asyncio.create_task(self._run(), name="front-ends")

    async def _run(self) -> None:
        while self.engine.state == EngineState.LOADING:
            await asyncio.sleep(WATCH_INTERVAL_S / 10)
        address = getattr(self.engine, "cluster_address", None)
        if self.engine.state == EngineState.DEAD or address is None:
            logger.error(
                "the other %d front ends are not started: the replicas are not running",
                self.config.api_server_count - 1,
            )
            return
        child_config = replace(self.config, port=self.port, ray_address=address)
        for index in range(1, self.config.api_server_count):
            self._spawn(replace(child_config, front_end_index=index))
        logger.info("started %d more front ends on port %d", len(self.children), self.port)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            for child in list(self.children.values()):
                if not self.stopping and not child.process.is_alive():
                    await self._restart(child, child_config)

    def _spawn(self, config: ServerConfig, quick_restarts: int = 0) -> None:
        index = config.front_end_index
        process = self._context.Process(
            target=run_child, args=(config,), name=f"omni-front-end-{index}"
        )
        process.start()  # on the loop's thread: the parent-death signal follows the thread
        self.children[index] = Child(index, process, time.monotonic(), quick_restarts)

    async def _restart(self, child: Child, child_config: ServerConfig) -> None:
        ran = time.monotonic() - child.started
        quick = 0 if ran >= STEADY_AFTER_S else child.quick_restarts + 1
        logger.error(
            "front end %d (pid %d) exited with code %s after %.0f s",
            child.index,
            child.process.pid,
            child.process.exitcode,
            ran,
        )
        if quick > MAX_QUICK_RESTARTS:
            logger.error("front end %d keeps exiting: not started again", child.index)
            del self.children[child.index]
            return
        await asyncio.sleep(RESTART_DELAY_S)
        if not self.stopping:
            self._spawn(replace(child_config, front_end_index=child.index), quick)
            logger.info("front end %d started again", child.index)

    def signal(self, signum: int) -> None:
        """Pass a signal on: SIGTERM drains each child, SIGINT (or a second one) stops it."""
        self.stopping = True
        for child in self.children.values():
            if child.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signum)

    async def stop(self, timeout: float) -> None:
        """Wait up to `timeout` s for the children to exit (signalled if they were not), then
        kill those left."""
        if not self.stopping:
            self.signal(signal.SIGTERM)
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        processes = [child.process for child in self.children.values()]
        deadline = time.monotonic() + timeout
        for process in processes:
            await asyncio.to_thread(process.join, max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                logger.warning("front end pid %d did not stop in time: killed", process.pid)
                process.kill()
                await asyncio.to_thread(process.join, KILL_WAIT_S)


def run_child(config: ServerConfig) -> None:
    """A child front end's process: it stops with its parent, however the parent ends."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # it died before the line above
        return
    from omni.http.server import run

    run(config)
