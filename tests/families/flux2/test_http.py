"""`python -m omni.serve --model DIR` serves a FLUX.2 [klein] directory over HTTP."""

from __future__ import annotations

import base64
import io

import requests
from PIL import Image

from tests.http.servers import ServerProcess


def test_served_images_and_bad_fields(tiny_flux2_dir, tmp_path):
    args = ["--model", str(tiny_flux2_dir), "--device", "cpu", "--profile-seconds", "0"]
    server = ServerProcess(args, tmp_path / "log")
    try:
        server.wait_healthy()
        url = f"{server.url}/v1/images/generations"
        body = {"prompt": "a red fox", "size": "48x32", "seed": 1, "num_inference_steps": 2}
        response = requests.post(url, json=body, timeout=120)
        assert response.status_code == 200, response.text
        image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
        assert (image.format, image.size) == ("PNG", (48, 32))

        bad = requests.post(url, json={"prompt": "a red fox", "true_cfg_scale": 2.0}, timeout=30)
        assert bad.status_code == 400
        error = bad.json()["error"]
        assert error["param"] == "true_cfg_scale" and "true_cfg_scale" in error["message"]
    finally:
        server.stop()
