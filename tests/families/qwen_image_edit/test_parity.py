"""Qwen-Image-Edit: omni's edit equals diffusers' QwenImageEditPipeline on the tiny model, while
batched step by step with another edit and a text-to-image request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from omni.errors import InvalidRequestError
from omni.models.qwen_image_edit import QwenImageEditAdapter
from tests.engine.helpers import assert_same_image, generate_all, pixels
from tests.families.qwen_image_edit.helpers import edit_params, pipeline_edit, text_to_image

# An edit under true CFG (the negative prompt is read with the image too), the same edit with
# another seed, and a text-to-image request of the same output size.
REQUESTS = [
    edit_params(negative_prompt="blurry", true_cfg_scale=3.0),
    edit_params(negative_prompt="blurry", true_cfg_scale=3.0, seed=1),
    edit_params(image=None, seed=4),
]


@pytest.fixture(scope="module")
def outputs(tiny_qwen_edit_dir: Path) -> tuple[list[Any], Any]:
    finished, stats = generate_all(tiny_qwen_edit_dir, REQUESTS)
    return [f.output for f in finished], stats


def test_the_edit_equals_the_pipeline_batched_with_a_generation(tiny_qwen_edit_dir, outputs):
    images, stats = outputs
    expected = pipeline_edit(tiny_qwen_edit_dir, REQUESTS[0])
    print("max pixel diff", np.abs(pixels(images[0]) - pixels(expected)).max())
    assert images[0].size == (REQUESTS[0].width, REQUESTS[0].height) == expected.size
    assert_same_image(images[0], expected)
    with pytest.raises(AssertionError):  # another seed is far outside the tolerance
        assert_same_image(images[1], expected)
    assert stats.max_batch_size_seen == len(REQUESTS)  # every step ran all three


def test_without_an_image_it_is_qwen_image_text_to_image(tiny_qwen_edit_dir, outputs):
    images, _ = outputs
    expected = text_to_image(tiny_qwen_edit_dir, REQUESTS[2])
    assert_same_image(images[2], expected)
    with pytest.raises(AssertionError):  # the edits of the same size look nothing like it
        assert_same_image(images[0], expected)


def test_tokens_per_row_counts_latents_reference_and_the_text_read_with_the_image(
    tiny_qwen_edit_dir,
):
    cpu = torch.device("cpu")
    adapter = QwenImageEditAdapter("tiny-qwen-edit", tiny_qwen_edit_dir, cpu, torch.float32)
    params = adapter.resolve(REQUESTS[0])
    height, width = adapter.reference_size(params.image)
    prompt = adapter.edit_pipe.prompt_template_encode.format(params.prompt)
    image = adapter.edit_pipe.image_processor.resize(params.image, height, width)
    inputs = adapter.edit_pipe.processor(text=[prompt], images=image, return_tensors="pt")
    text = inputs["input_ids"].shape[1] - adapter.edit_pipe.prompt_template_encode_start_idx
    reference = (height // 16) * (width // 16)
    output = (params.height // 16) * (params.width // 16)
    negative = adapter.edit_pipe.prompt_template_encode.format(params.negative_prompt)
    assert len(negative) <= len(prompt)  # the prompt is the longer text of the two rows
    assert adapter.tokens_per_row(params) == output + reference + text
    assert adapter.pad_group(params) == ((1, height // 16, width // 16),)
    assert adapter.pad_group(REQUESTS[2]) is None
    for field, value in (("mask", params.image), ("strength", 0.5)):
        with pytest.raises(InvalidRequestError) as refused:
            adapter.resolve(edit_params(**{field: value}))
        assert refused.value.param == field
