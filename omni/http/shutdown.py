"""Graceful shutdown: refuse new work, let work in flight finish (bounded), leave queued jobs.

While draining, every new request answers 503 (`server_shutting_down`, with Retry-After, on a
connection that then closes), video jobs are no longer handed to the engine, and the server
waits until the requests and video jobs already running are done or the timeout is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from omni.http.errors import ApiError

DRAIN_POLL_S = 0.05
SHUTDOWN_RETRY_AFTER_S = 5


class Drain:
    """Counts requests in flight, and refuses new ones once draining has begun."""

    def __init__(self) -> None:
        self.is_draining = False
        self.num_in_flight = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.is_draining:
            raise ApiError(
                503,
                "the server is shutting down; retry on another server or after it restarts",
                code="server_shutting_down",
                headers={"Retry-After": str(SHUTDOWN_RETRY_AFTER_S)},
                close_connection=True,
            )
        self.num_in_flight += 1
        try:
            return await handler(request)
        finally:
            self.num_in_flight -= 1

    async def wait_idle(self, num_busy: Callable[[], int], timeout: float) -> bool:
        """Wait until no request is in flight and `num_busy()` is 0; False if time ran out."""
        deadline = time.monotonic() + timeout
        while self.num_in_flight or num_busy():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_S)
        return True


DRAIN = web.AppKey("drain", Drain)
