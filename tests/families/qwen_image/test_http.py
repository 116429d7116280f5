"""`python -m omni.serve --model <tiny Qwen-Image>` answers the Images API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.http.servers import ServerProcess

IMAGES = "/v1/images/generations"


@pytest.fixture(scope="module")
def url(tiny_qwen_image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("serve-qwen") / "server.log"
    storage = tmp_path_factory.mktemp("storage-qwen")
    args = ["--model", str(tiny_qwen_image_dir), "--storage-path", str(storage)]
    process = ServerProcess(args, log_path)
    try:
        process.wait_healthy()
        yield process.url
    finally:
        process.stop()


def test_a_png_of_the_asked_size_comes_back(url: str) -> None:
    body = {
        "prompt": "a lighthouse on a rocky island",
        "size": "48x32",
        "n": 2,
        "seed": 7,
        "negative_prompt": " ",
        "true_cfg_scale": 3.0,
        "num_inference_steps": 2,
    }
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=120)

    assert response.status_code == 200, response.text
    assert response.json()["size"] == "48x32"
    images = [base64.b64decode(d["b64_json"]) for d in response.json()["data"]]
    assert len(images) == 2 and images[0] != images[1]  # seeds 7 and 8
    for data in images:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.size == (48, 32)


def test_the_default_size_is_the_models_omni_json(url: str) -> None:
    response = requests.post(f"{url}{IMAGES}", json={"prompt": "a cat", "seed": 1}, timeout=120)

    assert response.status_code == 200, response.text
    assert response.json()["size"] == "64x64"


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"prompt": "a cat", "size": "40x64"}, "size", "multiple of 16"),
        ({"prompt": "a cat", "size": "64x99999"}, "size", "out of range"),
        ({"prompt": "  "}, "prompt", "empty"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(url: str, body: dict, param: str, says: str) -> None:
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=60)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and says in error["message"]
