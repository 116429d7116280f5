"""The Wan adapter through the real engine, compared with diffusers' own Wan pipelines."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
)
from PIL import Image

from omni.errors import InvalidRequestError
from omni.request import GenerationParams
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine


def video_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="a red fox runs through the snow", num_inference_steps=4, guidance_scale=4.0, seed=0
    )
    return GenerationParams(**{**values, **overrides})


def gradient_image(width: int = 48, height: int = 40) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(255, 0, height, dtype=np.uint8)[:, None, None]
    return Image.fromarray(np.broadcast_to((x // 2 + y // 2), (height, width, 3)).copy())


def diffusers_video(model_dir, params: GenerationParams, pipe: Any = None) -> np.ndarray:
    """WanPipeline (or its image-to-video sibling, or `pipe`) as shipped: its own UniPC
    scheduler, left in place unless the request changes its shift or picks the Euler sampler."""
    pipeline_class = WanPipeline if params.image is None else WanImageToVideoPipeline
    pipe = pipe or pipeline_class.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, UniPCMultistepScheduler)
    if params.sampler == "euler":
        pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=params.flow_shift)
    elif params.flow_shift != pipe.scheduler.config.flow_shift:
        pipe.scheduler = UniPCMultistepScheduler.from_config(
            pipe.scheduler.config, flow_shift=params.flow_shift
        )
    extra: dict[str, Any] = {}
    if params.boundary_ratio is not None:
        pipe.register_to_config(boundary_ratio=params.boundary_ratio)
        extra["guidance_scale_2"] = params.guidance_scale_2
    if params.image is not None:
        extra["image"] = params.image
    frames = pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_frames=params.num_frames,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        **extra,
    ).frames[0]
    return (frames * 255).round().astype(np.uint8)


def assert_same_video(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    assert_same_image(actual, expected)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"negative_prompt": "blurry, static", "flow_shift": 5.0, "seed": 7, "num_frames": 5},
        {"guidance_scale": 1.0, "width": 48, "height": 32, "num_inference_steps": 3},
        {"num_frames": 1, "seed": 2},
        {"sampler": "euler", "num_inference_steps": 5},
    ],
    ids=["cfg", "negative-prompt-shift-5", "no-cfg-wide", "one-frame", "euler"],
)
def test_text_to_video_is_the_same_as_diffusers(tiny_wan_dir, overrides):
    (result,), _ = generate_all(tiny_wan_dir, [video_params(**overrides)])
    resolved = result.params
    assert result.output.shape == (resolved.num_frames, resolved.height, resolved.width, 3)
    assert_same_video(result.output, diffusers_video(tiny_wan_dir, resolved))


@pytest.mark.parametrize(
    "changed",
    [
        {"seed": 1},
        {"guidance_scale": 6.0},
        {"flow_shift": 5.0},
        {"prompt": "a boat at sea"},
        {"sampler": "dpm++2m"},
    ],
    ids=["seed", "guidance", "shift", "prompt", "sampler"],
)
def test_the_tolerance_tells_videos_apart(tiny_wan_dir, changed):
    """A small change of any input falls outside `assert_same_video`: the checks above can fail."""
    params = video_params()
    (base, other), _ = generate_all(tiny_wan_dir, [params, replace(params, **changed)])
    with pytest.raises(AssertionError):
        assert_same_video(other.output, base.output)


@pytest.mark.parametrize(
    "overrides",
    [
        {"guidance_scale": 4.0, "guidance_scale_2": 2.0, "num_inference_steps": 6},
        {"guidance_scale": 3.0, "boundary_ratio": 0.5, "seed": 5, "num_inference_steps": 6},
    ],
    ids=["two-scales", "request-boundary"],
)
def test_two_experts_are_the_same_as_diffusers(tiny_wan22_dir, overrides):
    (result,), _ = generate_all(tiny_wan22_dir, [video_params(**overrides)])
    assert_same_video(result.output, diffusers_video(tiny_wan22_dir, result.params))


def test_image_to_video_is_the_same_as_diffusers(tiny_wan_i2v_dir):
    params = video_params(image=gradient_image(), guidance_scale_2=2.5, num_inference_steps=6)
    (result,), _ = generate_all(tiny_wan_i2v_dir, [params])
    assert_same_video(result.output, diffusers_video(tiny_wan_i2v_dir, result.params))


def test_concurrent_videos_share_steps_and_each_matches_its_solo_run(tiny_wan22_dir):
    crowd = [
        video_params(seed=1, num_inference_steps=8),
        video_params(prompt="a boat on a calm sea", seed=2, guidance_scale=1.0),
        video_params(prompt="a city at night", seed=3, num_inference_steps=6, guidance_scale_2=1.0),
        video_params(seed=4, num_frames=5, negative_prompt="blurry"),
        video_params(seed=5, width=48, height=64),  # another size: padded into the same forward
        video_params(seed=6, sampler="euler", num_inference_steps=5),
        video_params(seed=7, sampler="dpm++2m", prompt="a boat on a calm sea"),
    ]

    async def scenario():
        # Encoding inline: all seven are admitted in one step, whatever the machine's load.
        async with running_engine(tiny_wan22_dir, overlap_stages=False) as engine:
            together = await asyncio.gather(*(engine.generate(p) for p in crowd))
            stats = engine.stats()
            alone = [await engine.generate(p) for p in crowd]
            return together, alone, stats

    together, alone, stats = run(scenario())
    # Six of the seven are one size (the other is too far off to pad): one forward held all six,
    # so the three samplers among them shared it.
    assert stats.max_batch_size_seen >= len(crowd) - 1
    assert {r.params.sampler for r in together} == {"unipc", "euler", "dpm++2m"}
    for shared, solo in zip(together, alone, strict=True):
        assert_same_video(shared.output, solo.output)


def test_engine_rejects_bad_video_requests_clearly(tiny_wan_dir):
    async def scenario():
        async with running_engine(tiny_wan_dir) as engine:
            assert engine.info.kind == "video"
            errors = []
            for overrides in ({"true_cfg_scale": 3.0}, {"num_frames": 0}, {"width": 8192}):
                with pytest.raises(InvalidRequestError) as error:
                    engine.resolve(video_params(**overrides))
                errors.append(error.value)
            return errors

    true_cfg, frames, size = run(scenario())
    assert true_cfg.param == "true_cfg_scale" and "guidance_scale" in str(true_cfg)
    assert frames.param == "num_frames" and "num_frames must be between 1 and" in str(frames)
    assert size.param == "size" and "out of range" in str(size)
