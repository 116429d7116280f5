"""/v1/images/edits on a Qwen-Image-Edit server, through the openai SDK; an edit shares
denoising steps with a generation; what the model cannot take is a 400 naming the field."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from tests.families.qwen_image_edit.helpers import serve, source_image
from tests.http.servers import stats, wait_until
from tests.http.test_edits import alpha_mask, check_400, decode, edit, png


@pytest.fixture(scope="module")
def url(tiny_qwen_edit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(tiny_qwen_edit_dir, tmp_path_factory)


def test_the_sdk_edits_and_the_edit_shares_steps_with_a_generation(url: str) -> None:
    """The edit runs in a thread; once it denoises, a generation of the same size joins it."""
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    result = {}

    def run_edit() -> None:
        result["edit"] = client.images.edit(
            image=("source.png", png(source_image()), "image/png"),
            prompt="make it night",
            extra_body={"seed": 5, "num_inference_steps": 8},
        )

    before = stats(url)
    worker = threading.Thread(target=run_edit)
    worker.start()
    wait_until(lambda: stats(url)["num_steps_run"] > before["num_steps_run"], 120, "the edit")
    body = {"prompt": "a fox", "size": "80x48", "num_inference_steps": 2, "seed": 1}
    generated = requests.post(f"{url}/v1/images/generations", json=body, timeout=120)
    worker.join(timeout=300)

    assert generated.status_code == 200, generated.text
    edited = result["edit"]
    assert edited.size == "80x48"  # the image's own size (a multiple of 16)
    assert decode(edited.data[0].b64_json).size == (80, 48)
    after = stats(url)
    shared = after["batch_size_counts"].get("2", 0) - before["batch_size_counts"].get("2", 0)
    assert shared == 2  # both of the generation's steps ran in the edit's forwards


def test_qwen_edit_takes_no_mask_or_strength_and_keeps_serving(url: str) -> None:
    image = ("image", ("a.png", png(source_image()), "image/png"))
    mask = ("mask", ("m.png", alpha_mask((80, 48)), "image/png"))
    check_400(edit(url, [image, mask]), "mask", "not supported")
    check_400(edit(url, [image], strength="0.5"), "strength", "not supported")
    two = [("image[]", (f"{i}.png", png(source_image()), "image/png")) for i in range(2)]
    check_400(edit(url, two), "image", "one image")
    body = {"prompt": "a fox", "num_inference_steps": 2, "size": "32x32"}
    generated = requests.post(f"{url}/v1/images/generations", json=body, timeout=120)
    assert generated.status_code == 200, generated.text
