"""`python -m omni.serve --model <tiny SD3 dir>`: the Images API end to end."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.http.servers import ServerProcess


@pytest.fixture(scope="module")
def url(tiny_sd3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("serve-sd3") / "server.log"
    storage = tmp_path_factory.mktemp("storage-sd3")
    server = ServerProcess(["--model", str(tiny_sd3_dir), "--storage-path", str(storage)], log_path)
    try:
        server.wait_healthy()
        yield server.url
    finally:
        server.stop()


def post(url: str, **body: object) -> requests.Response:
    return requests.post(f"{url}/v1/images/generations", json=body, timeout=120)


def test_a_request_gets_a_png_of_the_asked_size(url: str) -> None:
    response = post(url, prompt="a lighthouse at dusk", size="32x48", seed=3, sampler="unipc")

    assert response.status_code == 200, response.text
    [item] = response.json()["data"]
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert (image.format, image.size) == ("PNG", (32, 48))


def test_defaults_come_from_omni_json(url: str) -> None:
    response = post(url, prompt="a cat", seed=1, guidance_scale=1.0)

    assert response.status_code == 200, response.text
    assert response.json()["size"] == "64x64"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"true_cfg_scale": 2.0}, "true_cfg_scale"),
        ({"size": "40x40"}, "size"),
        ({"sampler": "heun"}, "sampler"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(url: str, body: dict, param: str) -> None:
    response = post(url, prompt="a cat", **body)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
