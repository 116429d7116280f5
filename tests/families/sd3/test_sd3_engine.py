"""The SD3 adapter through the real engine, compared with diffusers' StableDiffusion3Pipeline."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, StableDiffusion3Pipeline, UniPCMultistepScheduler

from omni.errors import InvalidRequestError
from omni.models.sd3 import SD3Adapter
from omni.request import GenerationParams
from omni.samplers import samplers_for
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine

SOLVERS = {"unipc": UniPCMultistepScheduler, "dpm++2m": DPMSolverMultistepScheduler}


def sd3_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="a red fox in the snow", width=64, height=64, num_inference_steps=4, seed=0
    )
    return GenerationParams(**{**values, **overrides})


def pipeline_image(model_dir: Path, params: GenerationParams) -> Any:
    """The same request through StableDiffusion3Pipeline.__call__ with its own scheduler (or,
    for another sampler, the diffusers scheduler that sampler reproduces, with omni's config)."""
    pipe = StableDiffusion3Pipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if params.sampler in SOLVERS:
        _, samplers = samplers_for(dict(pipe.scheduler.config))
        pipe.scheduler = SOLVERS[params.sampler].from_config(samplers[params.sampler].config)
    return pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
    ).images[0]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"width": 32, "height": 64, "num_inference_steps": 3, "guidance_scale": 5.0, "seed": 11},
        {"negative_prompt": "blurry, dark", "seed": 3},
        {"guidance_scale": 1.0, "seed": 5},
    ],
    ids=["default-cfg", "tall-3-steps", "negative-prompt", "no-cfg"],
)
def test_image_is_the_same_as_the_pipeline(any_sd3_dir, overrides):
    (result,), _ = generate_all(any_sd3_dir, [sd3_params(**overrides)])
    resolved = result.params
    assert resolved.guidance_scale == overrides.get("guidance_scale", 7.0)  # the pipeline's
    expected = pipeline_image(any_sd3_dir, resolved)
    assert result.output.size == expected.size == (resolved.width, resolved.height)
    assert_same_image(result.output, expected)


@pytest.mark.parametrize("sampler", ["unipc", "dpm++2m"])
def test_other_samplers_are_the_same_as_the_pipeline_with_that_scheduler(tiny_sd3_dir, sampler):
    params = sd3_params(sampler=sampler, num_inference_steps=5, seed=2)
    (result,), _ = generate_all(tiny_sd3_dir, [params])
    assert result.output.size == (64, 64)
    assert_same_image(result.output, pipeline_image(tiny_sd3_dir, result.params))


@pytest.mark.parametrize(
    "changed", [{"seed": 1}, {"prompt": "a boat at sea"}], ids=["seed", "prompt"]
)
def test_the_tolerance_tells_images_apart(tiny_sd3_dir, changed):
    """Another seed or prompt falls outside `assert_same_image`: the checks above can fail."""
    params = sd3_params()
    (base, other), _ = generate_all(tiny_sd3_dir, [params, replace(params, **changed)])
    with pytest.raises(AssertionError):
        assert_same_image(other.output, base.output)


def test_requests_share_forwards_and_each_matches_its_solo_run(any_sd3_dir):
    same_size = [
        sd3_params(seed=1, num_inference_steps=6),
        sd3_params(prompt="a boat on a calm sea", seed=2, guidance_scale=1.0),
        sd3_params(prompt="a city at night", seed=3, sampler="unipc", num_inference_steps=5),
        sd3_params(prompt="a bowl of fruit", seed=4, sampler="dpm++2m", negative_prompt="blur"),
    ]
    other_size = [sd3_params(seed=5, width=32, height=48)]  # its own forward: another size

    async def scenario():
        async with running_engine(any_sd3_dir) as engine:
            together = await asyncio.gather(*(engine.generate(p) for p in same_size + other_size))
            stats = engine.stats()
            alone = [await engine.generate(p) for p in same_size + other_size]
            return together, alone, stats

    together, alone, stats = run(scenario())
    # Different prompts, steps, samplers and guidance all ran in one forward (size permitting).
    assert stats.max_batch_size_seen == len(same_size)
    assert together[-1].output.size == (32, 48)
    for shared, solo in zip(together, alone, strict=True):
        assert_same_image(shared.output, solo.output)


@pytest.mark.parametrize(
    ("field", "value"),
    [("true_cfg_scale", 4.0), ("num_frames", 9), ("flow_shift", 5.0), ("sampler", "heun")],
)
def test_unsupported_or_bad_fields_are_refused_by_name(tiny_sd3_dir, field, value):
    async def scenario():
        async with running_engine(tiny_sd3_dir) as engine:
            with pytest.raises(InvalidRequestError) as error:
                await engine.generate(sd3_params(**{field: value}))
            return error.value

    error = run(scenario())
    assert error.param == field
    assert field in str(error)


@pytest.fixture(scope="module")
def adapter(tiny_sd3_dir) -> SD3Adapter:
    return SD3Adapter("tiny-sd3", tiny_sd3_dir, torch.device("cpu"), torch.float32)


def test_defaults_and_plan_follow_the_pipeline(adapter):
    resolved = adapter.resolve(GenerationParams(prompt="a cat"))
    # omni.json sets the tiny size and steps; guidance is the pipeline's 7.0, with CFG.
    assert (resolved.width, resolved.height, resolved.num_inference_steps) == (64, 64, 4)
    assert resolved.guidance_scale == 7.0 and resolved.sampler == "euler"
    keys, rows = adapter.plan(resolved)
    assert keys == (("sd3", 8, 8),) * 4 and rows == 2
    assert adapter.plan(replace(resolved, guidance_scale=1.0))[1] == 1
    assert adapter.tokens_per_row(resolved) == 4 * 4 + 77 + 256
    info = adapter.info
    assert (info.size_multiple, info.max_side) == (16, 256)  # pos_embed_max_size 16 patches


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"width": 40}, "size"),
        ({"height": 272}, "size"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_values_are_refused(adapter, overrides, param):
    with pytest.raises(InvalidRequestError) as error:
        adapter.resolve(GenerationParams(prompt="a cat", **overrides))
    assert error.value.param == param


def test_cfg_parallel_ranks_give_the_same_images(tiny_sd3_dir):
    """SD3 guides by default, so its rows split across two CFG-parallel ranks: same images."""
    crowd = [sd3_params(seed=1), sd3_params(seed=2, guidance_scale=1.0), sd3_params(seed=3)]
    parallel, _ = generate_all(tiny_sd3_dir, crowd, cfg_parallel_size=2)
    single, _ = generate_all(tiny_sd3_dir, crowd)
    for split, whole in zip(parallel, single, strict=True):
        assert_same_image(split.output, whole.output)


def test_the_pipeline_skips_no_layers_by_default():
    """Skip-layer guidance is opt-in in StableDiffusion3Pipeline, so omni's plain CFG is its
    default behaviour; omni offers no field for it."""
    default = inspect.signature(StableDiffusion3Pipeline.__call__).parameters
    assert default["skip_guidance_layers"].default is None
