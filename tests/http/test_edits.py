"""POST /v1/images/edits on the real server: the openai SDK, the multipart form, bad uploads."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import requests
from openai import OpenAI
from PIL import Image

from tests.engine.helpers import assert_same_image
from tests.engine.test_flux_edit import source_image

STEPS = 4


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def alpha_mask(size: tuple[int, int] = (64, 64)) -> bytes:
    """OpenAI's mask: transparent (alpha 0) on the right half marks what to repaint."""
    rgba = np.full((size[1], size[0], 4), 255, dtype=np.uint8)
    rgba[:, size[0] // 2 :, 3] = 0
    return png(Image.fromarray(rgba, mode="RGBA"))


def edit(url: str, files: list[tuple[str, Any]], **data: Any) -> requests.Response:
    data = {"prompt": "a red fox", "num_inference_steps": STEPS, "seed": 3, **data}
    return requests.post(f"{url}/v1/images/edits", files=files, data=data, timeout=120)


def decode(b64_json: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def test_openai_sdk_edits_with_a_mask(url: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    response = client.images.edit(
        image=[("source.png", png(source_image()), "image/png")],
        mask=("mask.png", alpha_mask(), "image/png"),
        prompt="a red fox in the snow",
        n=2,
        size="64x64",
        extra_body={"seed": 5, "num_inference_steps": STEPS, "strength": 0.8},
    )
    images = [decode(item.b64_json) for item in response.data]
    assert [(i.format, i.size) for i in images] == [("PNG", (64, 64))] * 2
    assert np.abs(np.asarray(images[0], np.int16) - np.asarray(images[1], np.int16)).mean() > 1


def test_an_edit_repeats_for_its_seed_and_depends_on_the_image(url: str) -> None:
    files = [("image", ("a.png", png(source_image()), "image/png"))]
    first, again = edit(url, files), edit(url, files)
    other = edit(url, [("image[]", ("b.png", png(Image.new("RGB", (64, 64))), "image/png"))])
    assert first.status_code == again.status_code == other.status_code == 200, first.text
    a, b = decode(first.json()["data"][0]["b64_json"]), decode(again.json()["data"][0]["b64_json"])
    assert_same_image(a, b)
    assert first.json()["size"] == "64x64"  # the image's own size when none is sent
    c = decode(other.json()["data"][0]["b64_json"])
    assert np.abs(np.asarray(a, np.int16) - np.asarray(c, np.int16)).mean() > 1


def bomb() -> bytes:
    """8000x8000 one-bit pixels: a few kB of PNG, 64 million pixels once decoded."""
    return png(Image.new("1", (8000, 8000)))


def check_400(response: requests.Response, param: str, words: str) -> None:
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error


def test_bad_uploads_get_a_clear_400_and_the_server_keeps_serving(url: str) -> None:
    image = ("image", ("a.png", png(source_image()), "image/png"))
    small = png(Image.new("RGB", (16, 16)))
    check_400(edit(url, [("image", ("a.txt", b"not an image", "text/plain"))]), "image", "read")
    check_400(edit(url, [("image", ("b.png", bomb(), "image/png"))]), "image", "pixels")
    check_400(
        edit(url, [image, ("mask", ("m.png", alpha_mask((32, 32)), "image/png"))]),
        "mask",
        "32x32",
    )
    many = [("image[]", (f"{i}.png", small, "image/png")) for i in range(17)]
    check_400(edit(url, many), "image", "at most 16")
    two = [("image[]", (f"{i}.png", small, "image/png")) for i in range(2)]
    check_400(edit(url, two), "image", "one image")
    check_400(edit(url, [image], strength="0"), "strength", "no step")
    check_400(edit(url, []), "image", "required")
    masks = [("mask", (f"{i}.png", alpha_mask(), "image/png")) for i in range(2)]
    check_400(edit(url, [image, *masks]), "mask", "more than once")
    assert edit(url, [image]).status_code == 200


def test_a_video_model_cannot_edit(video_url: str) -> None:
    response = edit(video_url, [("image", ("a.png", png(source_image()), "image/png"))])
    check_400(response, "model", "cannot edit")
