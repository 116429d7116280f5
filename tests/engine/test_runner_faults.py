from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest
import torch

from omni.errors import EngineNotReadyError
from omni.models.attention import resolve_attention_backend
from tests.conftest import run
from tests.engine.helpers import assert_same_image, image_params, running_engine


def test_out_of_memory_splits_the_batch_and_everyone_finishes(tiny_flux_dir):
    params = [image_params(seed=i) for i in range(4)]

    async def scenario(limit_rows: int | None):
        async with running_engine(tiny_flux_dir) as engine:
            adapter = engine._engine.adapter
            real_forward = adapter.forward
            seen_sizes = []

            def forward_with_memory_limit(rows):
                seen_sizes.append(len(rows))
                if limit_rows is not None and len(rows) > limit_rows:
                    raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
                return real_forward(rows)

            adapter.forward = forward_with_memory_limit
            results = await asyncio.gather(*(engine.generate(p) for p in params))
            return [r.output for r in results], seen_sizes, engine.stats()

    reference, _, _ = run(scenario(None))
    images, sizes, stats = run(scenario(1))
    assert 4 in sizes and max(s for s in sizes if s <= 1) == 1
    assert stats.num_failed == 0 and stats.num_finished == 4
    for image, expected in zip(images, reference, strict=True):
        assert_same_image(image, expected)


def test_auto_attention_backend_is_sdpa_without_cuda():
    assert resolve_attention_backend("auto", torch.device("cpu")) == "sdpa"
    assert resolve_attention_backend("sdpa", torch.device("cpu")) == "sdpa"


@pytest.mark.parametrize("backend", ["flash", "xformers"])
def test_gpu_only_attention_backend_on_cpu_is_a_clear_startup_error(tiny_flux_dir, backend):
    async def scenario():
        async with running_engine(tiny_flux_dir, attention_backend=backend):
            pass

    with pytest.raises(EngineNotReadyError, match=f"attention backend {backend} needs a CUDA"):
        run(scenario())


def test_an_encode_finishing_after_its_abort_is_not_taken_for_a_new_request_of_that_id(
    tiny_flux_dir,
):
    """Stage results belong to the request object they ran for, not to whatever request holds
    its id when they come back: a resubmission under the aborted one's id must wait for its own
    encode, not start denoising on the first one's."""
    second_params = image_params(prompt="a second prompt", seed=3)

    async def scenario(abort_first: bool):
        async with running_engine(tiny_flux_dir) as engine:
            adapter = engine._engine.adapter
            real_prepare = adapter.prepare
            entered, release = threading.Event(), threading.Event()

            def prepare(requests):
                if any(r.params.prompt == "held" for r in requests):
                    entered.set()
                    release.wait(30)
                real_prepare(requests)

            adapter.prepare = prepare
            if not abort_first:
                return (await engine.generate(second_params, request_id="same")).output
            first = asyncio.ensure_future(
                engine.generate(image_params(prompt="held"), request_id="same")
            )
            assert await asyncio.to_thread(entered.wait, 30)
            first.cancel()  # aborts it while its encode is still running
            with contextlib.suppress(asyncio.CancelledError):
                await first
            second = asyncio.ensure_future(engine.generate(second_params, request_id="same"))
            await asyncio.sleep(0.3)  # admitted: its encode queues behind the held one
            release.set()
            return (await second).output

    expected = run(scenario(abort_first=False))
    assert_same_image(run(scenario(abort_first=True)), expected)


def test_a_request_aborted_while_its_encode_is_queued_is_never_encoded(tiny_flux_dir):
    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            adapter = engine._engine.adapter
            real_prepare = adapter.prepare
            entered, release = threading.Event(), threading.Event()
            encoded: list[str] = []

            def prepare(requests):
                encoded.extend(r.params.prompt for r in requests)
                if any(r.params.prompt == "held" for r in requests):
                    entered.set()
                    release.wait(30)
                real_prepare(requests)

            adapter.prepare = prepare
            held = asyncio.ensure_future(engine.generate(image_params(prompt="held")))
            assert await asyncio.to_thread(entered.wait, 30)
            queued = asyncio.ensure_future(engine.generate(image_params(prompt="given up")))
            await asyncio.sleep(0.3)  # admitted, its encode queued behind the held one
            queued.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queued
            await asyncio.sleep(0.3)  # the abort has reached the engine
            release.set()
            await held
            return encoded

    assert run(scenario()) == ["held"]
