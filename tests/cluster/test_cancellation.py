"""The replicas' own path for cancelled calls, beside Serve's: the board keeps the ids the front
ends cancelled and a replica stops the calls it runs under those ids (a real engine here)."""

from __future__ import annotations

import asyncio

import pytest

from omni.cluster import board as board_module
from omni.cluster.board import CANCEL_KEPT_S, Board
from omni.cluster.calls import RunningCalls
from omni.engine import EngineStats, ReplicaStatus
from tests.conftest import run
from tests.engine.helpers import image_params, running_engine


def status(replica: str) -> ReplicaStatus:
    return ReplicaStatus(replica, 1, "node", "ready", None, 0, EngineStats())


def test_the_board_answers_each_post_with_the_calls_cancelled_lately(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(board_module.time, "monotonic", lambda: now[0])
    board = Board()
    assert board.post(status("a")) == []

    board.cancel("call-1")
    now[0] += CANCEL_KEPT_S / 2
    board.cancel("call-2")

    assert sorted(board.post(status("a"))) == ["call-1", "call-2"]
    assert sorted(board.post(status("b"))) == ["call-1", "call-2"]  # every replica hears of it
    now[0] += CANCEL_KEPT_S / 2 + 1
    assert board.post(status("a")) == ["call-2"]


def test_a_cancelled_call_aborts_its_engine_requests_and_others_run_on(tiny_flux_dir) -> None:
    calls = RunningCalls()

    async def call(engine, call_id: str, steps: int):
        with calls.running(call_id):
            return await engine.generate_many([image_params(num_inference_steps=steps)])

    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            doomed = asyncio.ensure_future(call(engine, "doomed", 1000))
            kept = asyncio.ensure_future(call(engine, "kept", 50))
            while engine.stats().num_running < 2:
                await asyncio.sleep(0.01)

            assert calls.cancel(["doomed", "elsewhere"]) == ["doomed"]

            with pytest.raises(asyncio.CancelledError):
                await doomed
            (finished,) = await kept
            while engine.stats().num_running:  # the abort lands at the engine's next step
                await asyncio.sleep(0.01)
            return finished, engine.stats()

    finished, stats = run(scenario(), timeout=120)

    assert finished.output.size == (64, 64)
    assert stats.num_aborted == 1 and stats.num_finished == 1


def test_a_call_cancelled_before_it_arrives_is_not_started() -> None:
    calls = RunningCalls()
    calls.cancel(["late"])
    started = []

    async def call(call_id: str) -> None:
        with calls.running(call_id):
            started.append(call_id)

    async def scenario():
        with pytest.raises(asyncio.CancelledError):
            await call("late")
        await call("other")
        await call(None)

    run(scenario(), timeout=10)

    assert started == ["other", None]
