"""The Z-Image adapter through the real engine equals diffusers' ZImagePipeline.__call__."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch

from omni.models.z_image import ZImageAdapter
from omni.request import GenerationParams
from tests.engine.helpers import assert_same_image, generate_all
from tests.families.z_image.helpers import LONG_PROMPT, diffusers_z_image, z_params


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"guidance_scale": 4.0, "negative_prompt": "blurry, dark", "seed": 7},
        {"guidance_scale": 2.5, "num_inference_steps": 3},
        {"width": 48, "height": 32, "num_inference_steps": 7, "seed": 3},
        {"prompt": LONG_PROMPT, "guidance_scale": 1.5},
        {"sampler": "unipc", "num_inference_steps": 5, "guidance_scale": 3.0},
    ],
    ids=["turbo-defaults", "cfg-negative", "cfg-empty-negative", "wide-7-steps", "long", "unipc"],
)
def test_the_engine_makes_the_pipelines_image(tiny_z_image_dir, overrides):
    (result,), _ = generate_all(tiny_z_image_dir, [z_params(**overrides)])
    resolved = result.params
    assert result.output.size == (resolved.width, resolved.height)
    assert_same_image(result.output, diffusers_z_image(tiny_z_image_dir, resolved))


@pytest.mark.parametrize(
    "changed",
    [{"seed": 1}, {"prompt": "a boat at sea"}, {"guidance_scale": 3.0}],
    ids=["seed", "prompt", "guidance"],
)
def test_the_tolerance_tells_images_apart(tiny_z_image_dir, changed):
    """Another seed, prompt or guidance falls outside `assert_same_image`: parity can fail."""
    params = z_params()
    (base, other), _ = generate_all(tiny_z_image_dir, [params, replace(params, **changed)])
    with pytest.raises(AssertionError):
        assert_same_image(other.output, base.output)


def test_defaults_are_the_pipelines_unless_omni_json_overrides(tiny_z_image_dir, tmp_path):
    def resolved(model_dir) -> GenerationParams:
        adapter = ZImageAdapter("z", model_dir, torch.device("cpu"), torch.float32)
        return adapter.resolve(GenerationParams(prompt="a cat"))

    bare = tmp_path / "bare"
    shutil.copytree(tiny_z_image_dir, bare)
    (bare / "omni.json").unlink()
    served = json.loads((tiny_z_image_dir / "omni.json").read_text())
    with_file, without = resolved(tiny_z_image_dir), resolved(bare)

    assert (with_file.width, with_file.height) == (served["width"], served["height"])
    assert with_file.num_inference_steps == served["num_inference_steps"]
    assert with_file.guidance_scale == served["guidance_scale"] == 0.0
    # ZImagePipeline.__call__: 1024x1024, 50 steps, guidance 5.
    assert (without.width, without.height, without.num_inference_steps) == (1024, 1024, 50)
    assert without.guidance_scale == 5.0 and without.sampler == "euler"
