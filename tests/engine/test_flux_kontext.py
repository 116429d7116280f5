"""FLUX.1 Kontext: omni's edits against diffusers' FluxKontextPipeline on the tiny model, and
edits of several sizes batched with a plain generation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from diffusers import FluxKontextPipeline
from PIL import Image

from omni.request import GenerationParams
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    generate_all,
    image_params,
    pixels,
)
from tests.engine.test_flux_edit import source_image

WIDE = Image.fromarray(np.asarray(source_image())[:32])  # 64x32: another preferred resolution


def diffusers_kontext(model_dir: Path, params: GenerationParams) -> Any:
    """The pipeline as it is, with max_area set so it keeps the requested size."""
    pipe = FluxKontextPipeline.from_pretrained(model_dir)
    area = params.height * params.width
    return diffusers_image(model_dir, params, pipe, image=params.image, max_area=area)


REQUESTS = [
    image_params(image=source_image(), num_inference_steps=2),
    image_params(image=WIDE, num_inference_steps=2, width=32, height=64, seed=1),
    image_params(
        image=source_image(),
        num_inference_steps=2,
        seed=2,
        negative_prompt="blurry",
        true_cfg_scale=2.0,
    ),
    image_params(num_inference_steps=2, seed=3),  # no image: text-to-image
    image_params(image=Image.new("RGB", (64, 64), "white"), num_inference_steps=2),
]
COMPARED = 3  # the edits checked against diffusers (each pipeline call takes seconds)


@pytest.fixture(scope="module")
def kontext_outputs(tiny_flux_kontext_dir: Path) -> tuple[list[Any], Any]:
    finished, stats = generate_all(tiny_flux_kontext_dir, REQUESTS)
    return [f.output for f in finished], stats


@pytest.mark.parametrize("index", range(COMPARED))
def test_kontext_matches_diffusers_batched_with_others(
    tiny_flux_kontext_dir: Path, kontext_outputs: tuple[list[Any], Any], index: int
) -> None:
    outputs, stats = kontext_outputs
    expected = diffusers_kontext(tiny_flux_kontext_dir, REQUESTS[index])
    print("max pixel diff", np.abs(pixels(outputs[index]) - pixels(expected)).max())
    assert outputs[index].size == (REQUESTS[index].width, REQUESTS[index].height)
    assert_same_image(outputs[index], expected)
    assert stats.max_batch_size_seen == len(REQUESTS)  # every step ran all of them at once


def test_the_reference_image_steers_the_edit(kontext_outputs: tuple[list[Any], Any]) -> None:
    """The same seed and prompt with a white reference: far outside the tolerance."""
    outputs, _ = kontext_outputs
    with pytest.raises(AssertionError):
        assert_same_image(outputs[0], outputs[4])
