"""POST /v1/videos/sync on a real server with the tiny Wan model: the MP4 in the response."""

from __future__ import annotations

import numpy as np
import requests

from tests.http.videos import assert_mp4
from tests.test_media import decode


def test_sync_returns_the_mp4_bytes_with_timing_headers(video_url: str) -> None:
    form = {"prompt": "a robot", "width": "48", "height": "32", "num_frames": "5", "fps": "10"}
    response = requests.post(f"{video_url}/v1/videos/sync", data=form, timeout=60)

    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["x-request-id"]
    assert float(response.headers["x-inference-time-s"]) > 0
    assert_mp4(decode(response.content), num_frames=5, fps=10, width=48, height=32)


def test_sync_takes_a_sampler(video_url: str) -> None:
    form = {"prompt": "a robot", "num_frames": "5", "seed": "1", "sampler": "dpm++2m"}
    response = requests.post(f"{video_url}/v1/videos/sync", data=form, timeout=60)
    default = requests.post(f"{video_url}/v1/videos/sync", data={**form, "sampler": "unipc"})

    assert response.status_code == default.status_code == 200, response.text
    frames, default_frames = decode(response.content).frames, decode(default.content).frames
    assert len(frames) == 5
    assert np.abs(np.asarray(frames, float) - np.asarray(default_frames, float)).mean() > 0.5


def test_a_cache_on_a_model_with_one_block_is_refused_clearly(video_url: str) -> None:
    form = {"prompt": "a robot", "num_frames": "5", "num_inference_steps": "12"}
    as_text = {**form, "cache": '{"type": "fbcache", "threshold": 5}'}
    response = requests.post(f"{video_url}/v1/videos/sync", data=as_text, timeout=60)
    plain = requests.post(f"{video_url}/v1/videos/sync", data={**form, "cache": "none"})

    # The tiny video model has one block: nothing after it to skip.
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "cache"
    assert "none after the first to skip" in response.json()["error"]["message"]
    assert plain.status_code == 200 and "x-cache-skipped-steps" not in plain.headers


def test_extra_params_carry_generation_fields(video_url: str) -> None:
    form = {"prompt": "a tide", "extra_params": '{"num_frames": 5, "fps": 5}'}
    response = requests.post(f"{video_url}/v1/videos/sync", data=form, timeout=60)

    assert response.status_code == 200, response.text
    decoded = decode(response.content)
    assert (len(decoded.frames), decoded.fps) == (5, 5)
