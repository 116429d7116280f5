"""Qwen-Image-Edit-2509 and later (QwenImageEditPlusPipeline): one edit reads several images,
equal to the pipeline on the tiny model, batched with a generation, and through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from diffusers import QwenImageEditPlusPipeline
from openai import OpenAI

from tests.engine.helpers import assert_same_image, generate_all
from tests.families.qwen_image_edit.helpers import (
    edit_params,
    pipeline_edit,
    serve,
    source_image,
)
from tests.http.test_edits import check_400, decode, edit, png

IMAGES = (source_image(), source_image(48, 48).transpose(0))  # two aspect ratios
EDIT = edit_params(image=IMAGES, negative_prompt=" ", true_cfg_scale=2.0)


@pytest.mark.slow  # four megapixel VAE encodes on the CPU: about a minute on 2 busy cores
def test_an_edit_of_two_images_equals_the_pipeline_batched_with_a_generation(
    tiny_qwen_edit_plus_dir: Path,
) -> None:
    (edited, generated), stats = generate_all(
        tiny_qwen_edit_plus_dir, [EDIT, edit_params(image=None, seed=3)]
    )
    expected = pipeline_edit(tiny_qwen_edit_plus_dir, EDIT, QwenImageEditPlusPipeline)
    assert_same_image(edited.output, expected)
    assert stats.max_batch_size_seen == 2
    with pytest.raises(AssertionError):
        assert_same_image(generated.output, expected)


@pytest.fixture(scope="module")
def url(tiny_qwen_edit_plus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tiny_qwen_edit_plus_dir, tmp_path_factory)


def test_the_sdk_sends_several_images(url: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    files = [(f"{i}.png", png(image), "image/png") for i, image in enumerate(IMAGES)]
    result = client.images.edit(
        image=files, prompt="put them together", extra_body={"seed": 2, "num_inference_steps": 2}
    )
    assert result.size == "48x48"  # the last image's own size
    assert decode(result.data[0].b64_json).size == (48, 48)
    many = [("image[]", (f"{i}.png", png(IMAGES[1]), "image/png")) for i in range(17)]
    check_400(edit(url, many), "image", "at most 16")
