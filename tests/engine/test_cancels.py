"""A caller cancelled while its request's progress keeps arriving (a client that disconnects
mid-run) aborts the request, whatever turn of the event loop the cancel lands in."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from omni.aio import wait_at_most
from tests.conftest import run
from tests.engine.helpers import image_params, running_engine

TRIALS = 8


def test_a_cancel_landing_as_the_awaited_item_arrives_is_kept() -> None:
    async def scenario() -> str:
        queue: asyncio.Queue[str] = asyncio.Queue()
        waiter = asyncio.create_task(wait_at_most(queue.get(), 5))
        for _ in range(3):
            await asyncio.sleep(0)
        queue.put_nowait("progress")  # arrives, and the caller is cancelled, in one turn
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        item = queue.get_nowait()  # left for the next reader: wait_for on 3.11 returned it
        with pytest.raises(TimeoutError):
            await wait_at_most(queue.get(), 0.01)
        return item

    assert run(scenario(), timeout=10) == "progress"


def test_a_caller_cancelled_as_another_requests_progress_arrives_aborts_its_request(
    tiny_flux_dir,
) -> None:
    """Each trial streams two long requests; the second one's consumer cancels the first one's
    at its third step, in the turn where the same step's progress reaches both."""

    async def stream_until_cancelled(engine, seed: int, cancelled: asyncio.Event, seen: list):
        async for event in engine.stream(image_params(seed=seed, num_inference_steps=1000)):
            if cancelled.is_set():
                seen.append(event)  # the consumer's task was cancelled, yet it reads on

    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            for trial in range(TRIALS):
                cancelled, seen_after_cancel = asyncio.Event(), []
                victim = asyncio.create_task(
                    stream_until_cancelled(engine, trial, cancelled, seen_after_cancel)
                )
                async for event in engine.stream(image_params(seed=99, num_inference_steps=1000)):
                    if event.step_index == 3:
                        victim.cancel()
                        cancelled.set()
                        break  # closing this stream aborts the second request
                with contextlib.suppress(asyncio.CancelledError):
                    await victim
                assert seen_after_cancel == [], f"trial {trial}: the cancel was lost"
            while engine.stats().num_running:
                await asyncio.sleep(0.01)
            return engine.stats()

    stats = run(scenario(), timeout=600)

    assert stats.num_aborted == 2 * TRIALS and stats.num_finished == 0
