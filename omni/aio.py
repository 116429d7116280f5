"""asyncio helpers the engine and the HTTP side share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_at_most(awaitable: Awaitable[T], seconds: float) -> T:
    """`asyncio.wait_for` without its flaw on Python 3.11: there, a cancel that lands in the
    same turn of the loop as the awaited thing completing is dropped and the result returned,
    so a request whose client went away as a step's progress arrived ran on to its last step.
    `asyncio.timeout` cancels the caller's own task and keeps every outside cancel.
    Raises TimeoutError after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable
