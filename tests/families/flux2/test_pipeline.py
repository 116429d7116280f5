"""The FLUX.2 [klein] adapter through the real engine equals diffusers' Flux2KleinPipeline."""

from __future__ import annotations

from dataclasses import replace

import pytest

from omni.models.base import ModelInfo
from omni.request import GenerationParams
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine
from tests.families.flux2.helpers import klein_params, pipeline_image

CASES = {
    "cfg": {},
    "no-cfg-wide-3-steps": {"guidance_scale": 1.0, "width": 32, "height": 64, "seed": 11,
                            "num_inference_steps": 3},
    "negative-prompt": {"negative_prompt": "blurry, dark", "guidance_scale": 6.0, "seed": 3},
    "large-5-steps": {"width": 96, "height": 80, "num_inference_steps": 5, "seed": 5},
    "unipc": {"sampler": "unipc", "seed": 6},
    "dpm++2m": {"sampler": "dpm++2m", "seed": 7, "num_inference_steps": 5},
}  # fmt: skip


@pytest.mark.parametrize("overrides", list(CASES.values()), ids=list(CASES))
def test_image_is_the_same_as_the_pipeline(tiny_flux2_dir, overrides):
    params = klein_params(**overrides)
    (result,), stats = generate_all(tiny_flux2_dir, [params])
    expected = pipeline_image(tiny_flux2_dir, result.params)
    assert result.output.size == (params.width, params.height) == expected.size
    assert_same_image(result.output, expected)
    cfg_rows = 2 if params.guidance_scale > 1 else 1
    assert stats.num_rows_run == cfg_rows * params.num_inference_steps


@pytest.mark.parametrize(
    "changed", [{"seed": 1}, {"prompt": "a boat at sea"}], ids=["seed", "prompt"]
)
def test_the_tolerance_tells_another_seed_or_prompt_apart(tiny_flux2_dir, changed):
    """Another seed or prompt falls outside `assert_same_image`: the checks above can fail."""
    params = klein_params()
    (other,), _ = generate_all(tiny_flux2_dir, [replace(params, **changed)])
    with pytest.raises(AssertionError):
        assert_same_image(other.output, pipeline_image(tiny_flux2_dir, params))


def test_distilled_model_ignores_guidance_like_the_pipeline(tiny_flux2_distilled_dir):
    params = klein_params(guidance_scale=4.0, seed=9)
    (result,), stats = generate_all(tiny_flux2_distilled_dir, [params])
    assert stats.num_rows_run == params.num_inference_steps  # no unconditional rows
    assert_same_image(result.output, pipeline_image(tiny_flux2_distilled_dir, result.params))


def test_defaults_come_from_omni_json_and_the_pipeline(tiny_flux2_dir):
    unset = klein_params(width=None, height=None, num_inference_steps=None, guidance_scale=None)

    async def scenario() -> tuple[ModelInfo, GenerationParams]:
        async with running_engine(tiny_flux2_dir) as engine:
            return engine.info, engine.resolve(unset)

    info, resolved = run(scenario())
    assert (info.kind, info.default_width, info.default_height) == ("image", 64, 64)
    assert info.size_multiple == 16  # 8x VAE, 2x2 patches
    assert (resolved.width, resolved.height, resolved.num_inference_steps) == (64, 64, 4)
    assert resolved.guidance_scale == 4.0  # Flux2KleinPipeline.__call__'s default
    assert resolved.sampler == "euler"  # its FlowMatchEulerDiscreteScheduler
