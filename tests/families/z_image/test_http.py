"""`python -m omni.serve --model DIR` on a Z-Image directory answers the Images API."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
import requests
from PIL import Image

from tests.http.servers import ServerProcess

IMAGES = "/v1/images/generations"


@pytest.fixture(scope="module")
def url(tiny_z_image_dir, tmp_path_factory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("z-image-serve")
    args = ["--model", str(tiny_z_image_dir), "--storage-path", str(root / "storage")]
    server = ServerProcess(args, root / "server.log")
    try:
        server.wait_healthy()
        yield server.url
    finally:
        server.stop()


def test_a_generation_is_a_png_of_the_asked_size(url):
    body = {"prompt": "a lighthouse on a cliff", "size": "48x32", "seed": 3, "n": 2}
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=120)

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 2
    for item in data:
        image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert (image.format, image.size) == ("PNG", (48, 32))


def test_a_field_z_image_does_not_take_is_400_naming_it(url):
    body = {"prompt": "a lighthouse", "true_cfg_scale": 4.0}
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=60)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "true_cfg_scale" and "true_cfg_scale" in error["message"]
