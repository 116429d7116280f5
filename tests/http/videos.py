"""Helpers for the Videos API tests on a real server: creating jobs, waiting for them, and
checking the MP4s and error bodies that come back."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
import requests
from openai import OpenAI
from PIL import Image

from tests.http.servers import wait_until
from tests.test_media import DecodedVideo

JOB_TIMEOUT_S = 90.0
# A job that runs for many seconds on the tiny model, for tests that need one still running.
LONG_JOB = {"prompt": "a very long take", "num_inference_steps": "1000", "num_frames": "9"}


def valid_num_frames(num_frames: int) -> int:
    """The documented Wan rule: the nearest 4k+1 at or below num_frames + 1 (80 -> 81)."""
    return num_frames // 4 * 4 + 1


@pytest.fixture(scope="module")
def client(video_url: str) -> OpenAI:
    return OpenAI(base_url=f"{video_url}/v1", api_key="unused", max_retries=0)


def create(url: str, **fields: Any) -> requests.Response:
    """POST /v1/videos as multipart/form-data, every value a string as a form sends it."""
    form = {name: (None, str(value)) for name, value in fields.items()}
    return requests.post(f"{url}/v1/videos", files=form, timeout=30)


def quick_job(url: str, **fields: Any) -> dict[str, Any]:
    fields = {"prompt": "a quick clip", "num_inference_steps": 1, "num_frames": 1, **fields}
    response = create(url, **fields)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for_job(url: str, video_id: str, timeout: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = requests.get(f"{url}/v1/videos/{video_id}", timeout=10).json()
        if job["status"] in ("completed", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"video {video_id} did not finish within {timeout} s")


def wait_until_running(url: str, video_id: str) -> dict[str, Any]:
    def running() -> bool:
        job = requests.get(f"{url}/v1/videos/{video_id}", timeout=10).json()
        return job["status"] == "in_progress" and job["progress"] > 0

    wait_until(running, JOB_TIMEOUT_S, f"video {video_id} to make progress")
    return requests.get(f"{url}/v1/videos/{video_id}", timeout=10).json()


def assert_mp4(video: DecodedVideo, num_frames: int, fps: int, width: int, height: int) -> None:
    assert (video.codec, video.pix_fmt) == ("h264", "yuv420p")
    assert (len(video.frames), video.fps, video.width, video.height) == (
        num_frames,
        fps,
        width,
        height,
    )


def assert_error(response: requests.Response, status: int, text: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert text in body["error"]["message"]
    return body["error"]


def image_file(
    image_format: str = "PNG",
    size: tuple[int, int] = (40, 24),
    colour: tuple[int, int, int] = (200, 120, 40),
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=image_format)
    return buffer.getvalue()
