"""The tiny LTX model behind a real `python -m omni.serve`: /v1/videos/sync end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.http.servers import ServerProcess
from tests.test_media import decode

SYNC_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def ltx_url(tiny_ltx_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("ltx-serve")
    args = ["--model", str(tiny_ltx_dir), "--storage-path", str(logs / "storage")]
    process = ServerProcess(args, logs / "server.log")
    try:
        process.wait_healthy()
        yield process.url
    finally:
        process.stop()


def sync(url: str, **fields: object) -> requests.Response:
    form = {name: str(value) for name, value in fields.items()}
    return requests.post(f"{url}/v1/videos/sync", data=form, timeout=SYNC_TIMEOUT_S)


def test_sync_returns_an_mp4_of_the_asked_size_frames_and_fps(ltx_url: str) -> None:
    response = sync(
        ltx_url, prompt="a paper boat", width=96, height=64, num_frames=16, fps=12, seed=3
    )

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "video/mp4"
    video = decode(response.content)
    assert (video.codec, video.pix_fmt) == ("h264", "yuv420p")
    # 16 frames round to LTX's nearest 8k+1 count, 17.
    assert (len(video.frames), video.fps, video.width, video.height) == (17, 12, 96, 64)


def test_sync_with_the_model_defaults(ltx_url: str) -> None:
    response = sync(ltx_url, prompt="a quiet street", guidance_scale=1.0)

    assert response.status_code == 200, response.text
    video = decode(response.content)
    assert (len(video.frames), video.fps, video.width, video.height) == (9, 8, 64, 64)


@pytest.mark.parametrize(
    "field, value",
    [("flow_shift", 5.0), ("guidance_scale_2", 2.0), ("num_inference_steps", 1)],
)
def test_a_field_ltx_cannot_honour_is_a_400_naming_it(ltx_url: str, field, value) -> None:
    response = sync(ltx_url, prompt="a cat", **{field: value})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and field in error["message"]
