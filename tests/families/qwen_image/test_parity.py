"""The engine's Qwen-Image images equal diffusers' QwenImagePipeline.__call__ on the same model."""

from __future__ import annotations

import shutil

import pytest
import torch

from omni.models.base import SERVING_DEFAULTS_FILE
from omni.models.qwen_image import QwenImageAdapter
from tests.engine.helpers import assert_same_image, generate_all
from tests.families.qwen_image.helpers import LONG_PROMPT, pipeline_image, qwen_params


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"width": 32, "height": 64, "num_inference_steps": 3, "seed": 11},
        {"negative_prompt": " ", "seed": 3},  # the default true_cfg_scale (4) with CFG on
        {"negative_prompt": "blurry, low quality", "true_cfg_scale": 6.5, "seed": 5},
        {"negative_prompt": "blurry", "true_cfg_scale": 1.0, "seed": 6},  # CFG off
        {"prompt": LONG_PROMPT, "negative_prompt": "blurry", "num_inference_steps": 2},
    ],
    ids=["default", "tall-3-steps", "cfg-default-scale", "cfg-6.5", "scale-1-no-cfg", "long"],
)
def test_image_is_the_same_as_the_pipeline(tiny_qwen_image_dir, overrides):
    params = qwen_params(**overrides)
    expected = pipeline_image(tiny_qwen_image_dir, params)
    (result,), _ = generate_all(tiny_qwen_image_dir, [params])
    assert result.output.size == expected.size
    assert_same_image(result.output, expected)


def test_served_defaults_are_the_pipelines_unless_omni_json_overrides(tiny_qwen_image_dir, qwen):
    """omni.json of the tiny model sets size and steps; true_cfg_scale stays the pipeline's 4,
    which without a negative prompt runs no CFG, as in the pipeline."""
    params = qwen.resolve(qwen_params(width=None, height=None, num_inference_steps=None))
    assert (params.width, params.height, params.num_inference_steps) == (64, 64, 4)
    assert params.true_cfg_scale == 4.0 and params.guidance_scale is None
    assert qwen.plan(params)[1] == 1
    assert qwen.plan(qwen.resolve(qwen_params(negative_prompt="")))[1] == 2
    expected = pipeline_image(tiny_qwen_image_dir, qwen_params(num_inference_steps=4))
    (result,), _ = generate_all(tiny_qwen_image_dir, [qwen_params(num_inference_steps=None)])
    assert_same_image(result.output, expected)


def test_without_omni_json_the_pipeline_call_defaults_apply(tiny_qwen_image_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_qwen_image_dir, bare)
    (bare / SERVING_DEFAULTS_FILE).unlink()
    adapter = QwenImageAdapter("bare", bare, torch.device("cpu"), torch.float32)
    params = adapter.resolve(qwen_params(width=None, height=None, num_inference_steps=None))
    assert (params.width, params.height, params.num_inference_steps) == (1024, 1024, 50)


def test_another_seed_or_prompt_is_far_outside_the_tolerance(tiny_qwen_image_dir):
    base = qwen_params(negative_prompt=" ")
    expected = pipeline_image(tiny_qwen_image_dir, base)
    (reseeded, reprompted), _ = generate_all(
        tiny_qwen_image_dir,
        [
            qwen_params(negative_prompt=" ", seed=1),
            qwen_params(negative_prompt=" ", prompt="a cat"),
        ],
    )
    for other in (reseeded, reprompted):
        with pytest.raises(AssertionError):
            assert_same_image(other.output, expected)
