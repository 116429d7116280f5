from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import FluxPipeline

from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.request import GenerationParams
from tests.conftest import run


def image_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="a red fox in the snow",
        width=64,
        height=64,
        num_inference_steps=4,
        guidance_scale=3.5,
        seed=0,
    )
    return GenerationParams(**{**values, **overrides})


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# Tolerance for "the same image": a batch of one row runs some matmuls as gemv where a larger
# batch uses gemm, so float32 results differ in the last bits (~4e-7 after one linear) and can
# move a pixel by a level after rounding. Any real error (other noise, other schedule, other
# guidance) moves the mean by tens of levels.
MAX_PIXEL_DIFF = 2
MAX_MEAN_PIXEL_DIFF = 0.05


def assert_same_image(actual: Any, expected: Any) -> None:
    a, b = pixels(actual), pixels(expected)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.max() <= MAX_PIXEL_DIFF, f"max pixel difference {diff.max()}"
    assert diff.mean() <= MAX_MEAN_PIXEL_DIFF, f"mean pixel difference {diff.mean():.4f}"


@asynccontextmanager
async def running_engine(model: Path | str, **config: Any) -> AsyncIterator[AsyncEngine]:
    """A started engine. No start-up profile unless asked for: on a shared machine its budget
    varies from run to run, and tests that count requests per forward need it not to."""
    config.setdefault("profile_seconds", 0)
    engine = AsyncEngine(EngineConfig(model=str(model), **config))
    await engine.start()
    try:
        await engine.wait_ready(timeout=120)
        yield engine
    finally:
        await engine.stop()


def generate_all(model_dir: Path | str, params_list: list[GenerationParams], **config: Any):
    """(Finished results, engine stats) for requests submitted together to a fresh engine."""

    async def scenario():
        async with running_engine(model_dir, **config) as engine:
            return await engine.generate_many(params_list), engine.stats()

    return run(scenario(), timeout=300)


def diffusers_image(
    model_dir: Path | str, params: GenerationParams, pipe: Any = None, **extra: Any
) -> Any:
    """The same request through diffusers' own FluxPipeline.__call__, for comparison: or that
    of `pipe` (another FLUX pipeline, or one a test hooks into), with `extra` arguments."""
    pipe = pipe or FluxPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    cfg = {}
    if params.negative_prompt is not None:
        cfg = {"negative_prompt": params.negative_prompt, "true_cfg_scale": params.true_cfg_scale}
    return pipe(
        prompt=params.prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        max_sequence_length=pipe.tokenizer_2.model_max_length,
        **cfg,
        **extra,
    ).images[0]
