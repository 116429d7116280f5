"""The LTX adapter through the real engine, compared with diffusers' own LTXPipeline."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, LTXPipeline, UniPCMultistepScheduler

from omni.errors import InvalidRequestError
from omni.models.base import SERVING_DEFAULTS_FILE
from omni.models.ltx import LTXAdapter
from omni.request import GenerationParams
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine

SHIFT_LINE_KEYS = ("base_image_seq_len", "max_image_seq_len", "base_shift", "max_shift")


def video_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(prompt="a red fox runs through the snow", seed=0)
    return GenerationParams(**{**values, **overrides})


def diffusers_video(model_dir: Path, params: GenerationParams) -> np.ndarray:
    """LTXPipeline.__call__ as shipped (its own FlowMatchEulerDiscreteScheduler), or with the
    UniPC scheduler the `unipc` sampler reproduces."""
    pipe = LTXPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)
    if params.sampler == "unipc":
        shipped = dict(pipe.scheduler.config)
        samplers = LTXAdapter.__new__(LTXAdapter)
        samplers.init_samplers(shipped)
        pipe.scheduler = UniPCMultistepScheduler.from_config(samplers.samplers["unipc"].config)
        # LTXPipeline reads mu's line (base/max shift and sequence lengths) from its scheduler's
        # config; omni keeps the model's line whatever the solver, so the swapped one gets it.
        pipe.scheduler.register_to_config(**{k: shipped[k] for k in SHIFT_LINE_KEYS})
    frames = pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_frames=params.num_frames,
        frame_rate=params.fps,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        output_type="np",
    ).frames[0]
    return (frames * 255).round().astype(np.uint8)


def assert_same_video(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == np.uint8 and actual.shape == expected.shape
    assert_same_image(actual, expected)


# Parity with LTXPipeline -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"negative_prompt": "blurry, static", "seed": 7, "num_frames": 17, "fps": 24},
        {"guidance_scale": 1.0, "width": 96, "height": 32, "num_inference_steps": 3},
        {"num_frames": 1, "seed": 2, "guidance_scale": 5.0},
        {"sampler": "unipc", "num_inference_steps": 5, "seed": 4},
    ],
    ids=["cfg", "negative-prompt-17-frames-24-fps", "no-cfg-wide", "one-frame", "unipc"],
)
def test_text_to_video_is_the_same_as_diffusers(tiny_ltx_dir, overrides):
    (result,), _ = generate_all(tiny_ltx_dir, [video_params(**overrides)])
    resolved = result.params
    assert result.output.shape == (resolved.num_frames, resolved.height, resolved.width, 3)
    assert_same_video(result.output, diffusers_video(tiny_ltx_dir, resolved))


def test_a_timestep_conditioned_vae_decodes_as_the_pipeline_does(tiny_ltx_timestep_vae_dir):
    (result,), _ = generate_all(tiny_ltx_timestep_vae_dir, [video_params(seed=3)])
    assert_same_video(result.output, diffusers_video(tiny_ltx_timestep_vae_dir, result.params))


@pytest.mark.parametrize(
    "changed",
    [{"seed": 1}, {"prompt": "a boat at sea"}, {"fps": 24}, {"guidance_scale": 5.0}],
    ids=["seed", "prompt", "fps", "guidance"],
)
def test_the_tolerance_tells_videos_apart(tiny_ltx_dir, changed):
    """A change of any input falls outside `assert_same_video`: the parity checks can fail."""
    params = video_params()
    (base, other), _ = generate_all(tiny_ltx_dir, [params, replace(params, **changed)])
    with pytest.raises(AssertionError):
        assert_same_video(other.output, base.output)


# Batching ------------------------------------------------------------------------------------


def test_concurrent_videos_share_forwards_and_each_matches_its_solo_run(tiny_ltx_dir):
    crowd = [
        video_params(seed=1, num_inference_steps=6),
        video_params(prompt="a boat on a calm sea", seed=2, guidance_scale=1.0),
        video_params(prompt="a city at night", seed=3, sampler="unipc", num_inference_steps=5),
        video_params(seed=4, sampler="dpm++2m", negative_prompt="blurry", fps=24),
        video_params(seed=5, width=96, height=32),  # another latent shape: forwards of its own
    ]

    async def scenario():
        async with running_engine(tiny_ltx_dir) as engine:
            together = await asyncio.gather(*(engine.generate(p) for p in crowd))
            stats = engine.stats()
            alone = [await engine.generate(p) for p in crowd]
            return together, alone, stats

    together, alone, stats = run(scenario(), timeout=300)
    # The four 64x64 requests (other prompts, steps, samplers, fps, guidance) share forwards;
    # the 96x32 one never joins them.
    assert stats.max_batch_size_seen == 4
    for shared, solo in zip(together, alone, strict=True):
        assert_same_video(shared.output, solo.output)
        assert shared.output.shape == (9, shared.params.height, shared.params.width, 3)


def test_the_samplers_run_end_to_end_and_differ(tiny_ltx_dir):
    names = ("euler", "unipc", "dpm++2m")
    results, _ = generate_all(tiny_ltx_dir, [video_params(sampler=name) for name in names])
    assert [r.params.sampler for r in results] == list(names)
    euler, unipc, dpm = (r.output for r in results)
    for other in (unipc, dpm):
        assert other.shape == euler.shape
        with pytest.raises(AssertionError):
            assert_same_video(other, euler)


# Requests ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter(tiny_ltx_dir) -> LTXAdapter:
    return LTXAdapter("tiny-ltx", tiny_ltx_dir, torch.device("cpu"), torch.float32)


@pytest.mark.parametrize(
    "field, value",
    [
        ("true_cfg_scale", 4.0),
        ("flow_shift", 5.0),
        ("guidance_scale_2", 2.0),
        ("boundary_ratio", 0.5),
        ("image", object()),
    ],
)
def test_fields_ltx_does_not_take_are_refused_by_name(adapter, field, value):
    with pytest.raises(InvalidRequestError) as error:
        adapter.resolve(video_params(**{field: value}))
    assert error.value.param == field and field in str(error.value)


def test_the_engine_refuses_an_unknown_field(tiny_ltx_dir):
    async def scenario():
        async with running_engine(tiny_ltx_dir) as engine:
            assert engine.info.kind == "video"
            with pytest.raises(InvalidRequestError) as error:
                engine.resolve(video_params(flow_shift=3.0))
            return error.value

    assert run(scenario()).param == "flow_shift"


@pytest.mark.parametrize(
    "asked, made", [(160, 161), (161, 161), (159, 153), (9, 9), (2, 1), (1, 1), (1001, 1001)]
)
def test_frame_counts_round_to_8k_plus_1(adapter, asked, made):
    assert adapter.resolve(video_params(num_frames=asked)).num_frames == made


def test_sides_round_to_multiples_of_32_and_bad_values_are_refused(adapter):
    resolved = adapter.resolve(video_params(width=100, height=40))
    assert (resolved.width, resolved.height) == (96, 32)
    for overrides, param in (
        ({"num_frames": 0}, "num_frames"),
        ({"width": 8192}, "size"),
        ({"fps": 0}, "fps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"sampler": "ddim"}, "sampler"),
        ({"num_inference_steps": 1}, "num_inference_steps"),  # LTXPipeline makes NaN
    ):
        with pytest.raises(InvalidRequestError) as error:
            adapter.resolve(video_params(**overrides))
        assert error.value.param == param


def test_defaults_come_from_omni_json_else_from_ltx_pipeline(adapter, tiny_ltx_dir, tmp_path):
    tiny = adapter.resolve(video_params(seed=None))
    assert (tiny.width, tiny.height, tiny.num_frames, tiny.fps) == (64, 64, 9, 8)
    assert (tiny.num_inference_steps, tiny.guidance_scale, tiny.sampler) == (4, 3.0, "euler")
    assert tiny.seed is not None
    bare = shutil.copytree(tiny_ltx_dir, tmp_path / "bare")
    (bare / SERVING_DEFAULTS_FILE).unlink()
    full = LTXAdapter("bare", bare, torch.device("cpu"), torch.float32).resolve(video_params())
    assert (full.width, full.height, full.num_frames, full.fps) == (704, 512, 161, 25)
    assert (full.num_inference_steps, full.guidance_scale) == (50, 3.0)


def test_plan_keys_forwards_by_latent_shape_and_rows_by_guidance(adapter):
    params = adapter.resolve(video_params(num_frames=17, width=96, height=32))
    keys, rows = adapter.plan(params)
    assert keys == (("ltx", 3, 1, 3),) * 4 and rows == 2
    assert adapter.tokens_per_row(params) == 9
    _, rows = adapter.plan(adapter.resolve(video_params(guidance_scale=1.0)))
    assert rows == 1
