from __future__ import annotations

import asyncio

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
