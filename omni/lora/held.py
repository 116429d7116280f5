"""Requests' adapters held on the device while they run: read in a worker thread (never the
engine's), pinned in the manager's LRU, released when the request leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from omni.lora.manager import LoraManager
from omni.lora.rows import RowStack
from omni.lora.spec import LoraSpec
from omni.request import Request


async def acquire_loras(loras: LoraManager, specs: tuple[LoraSpec, ...]) -> RowStack:
    """`loras.acquire` in a worker thread; a caller cancelled meanwhile leaves nothing pinned."""
    loading = asyncio.ensure_future(asyncio.to_thread(loras.acquire, specs))
    try:
        return await asyncio.shield(loading)
    except asyncio.CancelledError:
        loading.add_done_callback(
            lambda done: done.cancelled() or done.exception() or loras.release(done.result())
        )
        raise


@asynccontextmanager
async def loras_held(loras: LoraManager | None, requests: list[Request]) -> AsyncIterator[None]:
    """Each request's adapters (`request.lora`), loaded and pinned for the block."""
    held = [r for r in requests if r.params.lora]
    if loras is None or not held:
        yield
        return
    try:
        for request in held:
            request.lora = await acquire_loras(loras, request.params.lora)
        yield
    finally:
        for request in held:
            if request.lora is not None:
                loras.release(request.lora)
