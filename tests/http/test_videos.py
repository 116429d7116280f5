"""The Videos API on a real server with the tiny Wan model: the SDK and raw HTTP."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
import openai
import pytest
import requests
from openai import OpenAI
from PIL import Image

from tests.http.servers import (
    VIDEO_SERVED_NAME,
    ServerThread,
    stats,
    wait_until,
)
from tests.test_media import DecodedVideo, decode

JOB_TIMEOUT_S = 90.0
# A job that runs for many seconds on the tiny model, for tests that need one still running.
LONG_JOB = {"prompt": "a very long take", "num_inference_steps": "1000", "num_frames": "9"}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora notice


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


# The OpenAI SDK ------------------------------------------------------------------------------


def test_sdk_create_and_poll_completes_and_downloads_the_requested_mp4(client: OpenAI) -> None:
    video = client.videos.create_and_poll(
        prompt="a paper boat on a pond",
        model=VIDEO_SERVED_NAME,
        size="48x32",
        extra_body={"num_frames": 9, "fps": 8, "num_inference_steps": 2, "seed": 1},
    )

    assert (video.status, video.progress, video.error) == ("completed", 100, None)
    assert (video.object, video.model, video.size) == ("video", VIDEO_SERVED_NAME, "48x32")
    assert video.prompt == "a paper boat on a pond"
    assert float(video.seconds) == 9 / 8
    assert video.completed_at >= video.created_at
    content = client.videos.download_content(video.id)
    assert_mp4(decode(content.content), num_frames=9, fps=8, width=48, height=32)


def test_sdk_seconds_and_fps_set_the_frame_count(client: OpenAI) -> None:
    video = client.videos.create_and_poll(
        prompt="a slow pan", seconds="2", extra_body={"fps": 8, "num_inference_steps": 1}
    )

    expected_frames = valid_num_frames(2 * 8)
    assert video.status == "completed"
    assert float(video.seconds) == expected_frames / 8
    decoded = decode(client.videos.download_content(video.id).content)
    assert (len(decoded.frames), decoded.fps) == (expected_frames, 8)


def test_sdk_lists_jobs_in_pages(client: OpenAI, video_url: str) -> None:
    mine = [quick_job(video_url)["id"] for _ in range(3)]

    first = client.videos.list(limit=2, order="desc")
    assert [v.id for v in first.data] == mine[::-1][:2]
    assert first.has_more
    second = first.get_next_page()
    assert second.data[0].id == mine[0]
    every_id = [v.id for v in client.videos.list(limit=2, order="asc")]  # follows the pages
    assert [i for i in every_id if i in mine] == mine
    assert len(every_id) == len(set(every_id))
    raw = requests.get(f"{video_url}/v1/videos", params={"limit": 2}, timeout=10).json()
    assert raw["object"] == "list"
    assert (raw["first_id"], raw["last_id"]) == (raw["data"][0]["id"], raw["data"][-1]["id"])
    for video_id in mine:
        wait_for_job(video_url, video_id)


def test_sdk_delete_removes_the_job_and_then_get_is_404(
    client: OpenAI, video_server: ServerThread
) -> None:
    video = client.videos.create_and_poll(prompt="gone soon", extra_body={"num_frames": 1})
    path = video_server.config.storage_path / f"{video.id}.mp4"
    assert path.is_file()

    deleted = client.videos.delete(video.id)

    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)
    assert not path.exists()


# Jobs over raw HTTP --------------------------------------------------------------------------


def test_a_running_job_reports_progress_refuses_content_and_is_aborted_by_delete(
    video_url: str, video_server: ServerThread
) -> None:
    aborted_before = stats(video_url)["num_aborted"]
    job = create(video_url, **LONG_JOB).json()
    assert (job["status"], job["progress"]) == ("queued", 0)

    running = wait_until_running(video_url, job["id"])
    content = requests.get(f"{video_url}/v1/videos/{job['id']}/content", timeout=10)
    deleted = requests.delete(f"{video_url}/v1/videos/{job['id']}", timeout=30)

    assert 0 < running["progress"] < 100
    assert assert_error(content, 409, "not ready")["code"] == "video_not_ready"
    assert deleted.json() == {"id": job["id"], "object": "video.deleted", "deleted": True}
    assert requests.get(f"{video_url}/v1/videos/{job['id']}", timeout=10).status_code == 404
    wait_until(lambda: stats(video_url)["num_aborted"] > aborted_before, 30, "the abort")
    assert stats(video_url)["num_running"] == 0
    assert list(video_server.config.storage_path.glob(f"*{job['id']}*")) == []


def test_a_job_get_says_when_to_poll_again(video_url: str) -> None:
    job = quick_job(video_url)
    response = requests.get(f"{video_url}/v1/videos/{job['id']}", timeout=10)

    assert int(response.headers["openai-poll-after-ms"]) > 0
    wait_for_job(video_url, job["id"])


def test_a_json_body_creates_a_job_too(video_url: str) -> None:
    body = {"prompt": "json", "num_frames": 5, "fps": 4, "width": 32, "height": 48, "seed": 2}
    job = requests.post(f"{video_url}/v1/videos", json=body, timeout=30).json()

    done = wait_for_job(video_url, job["id"])
    content = requests.get(f"{video_url}/v1/videos/{job['id']}/content", timeout=10)

    assert done["status"] == "completed"
    assert content.headers["Content-Type"] == "video/mp4"
    assert_mp4(decode(content.content), num_frames=5, fps=4, width=32, height=48)


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


def test_concurrent_jobs_share_denoising_steps(video_url: str) -> None:
    def batched_steps() -> int:
        counts = stats(video_url)["batch_size_counts"]
        return sum(count for size, count in counts.items() if int(size) > 1)

    before = batched_steps()
    fields = {"prompt": "a crowd", "num_inference_steps": 8, "num_frames": 5}
    jobs = [create(video_url, **fields, seed=seed).json() for seed in range(3)]

    assert all(wait_for_job(video_url, j["id"])["status"] == "completed" for j in jobs)
    assert batched_steps() > before
    assert stats(video_url)["max_batch_size_seen"] > 1


def test_extra_params_carry_generation_fields(video_url: str) -> None:
    form = {"prompt": "a tide", "extra_params": '{"num_frames": 5, "fps": 5}'}
    response = requests.post(f"{video_url}/v1/videos/sync", data=form, timeout=60)

    assert response.status_code == 200, response.text
    decoded = decode(response.content)
    assert (len(decoded.frames), decoded.fps) == (5, 5)


def test_fields_that_change_nothing_are_accepted(video_url: str) -> None:
    job = quick_job(
        video_url,
        user="user-17",
        lora="{}",
        enable_frame_interpolation="false",
        negative_prompt="blurry",
        guidance_scale=3.0,
        flow_shift=5.0,
    )
    assert wait_for_job(video_url, job["id"])["status"] == "completed"


# Refusals ------------------------------------------------------------------------------------


def image_file(
    image_format: str = "PNG",
    size: tuple[int, int] = (40, 24),
    colour: tuple[int, int, int] = (200, 120, 40),
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=image_format)
    return buffer.getvalue()


PNG_1PX = base64.b64encode(image_file(size=(1, 1))).decode("ascii")

REFUSED_FORMS = [
    ({"size": "64x32", "width": "48"}, 400, "disagree"),
    ({"size": "64x"}, 400, "Invalid size format"),
    ({"seconds": "4", "fps": "8", "num_frames": "9"}, 400, "num_frames=9 gives 9"),
    ({"seconds": "soon"}, 400, "seconds must be a positive number"),
    ({"seconds": "-1"}, 400, "seconds must be a positive number"),
    ({"lora": '{"path": "a.safetensors"}'}, 400, "LoRA is not supported yet"),
    ({"lora": "{broken"}, 400, "lora is not valid JSON"),
    ({"lora": "[1, 2]"}, 400, "lora must be a JSON object"),
    ({"extra_params": "{broken"}, 400, "extra_params is not valid JSON"),
    ({"extra_params": '"text"'}, 400, "extra_params must be a JSON object"),
    ({"extra_params": '{"magcache": 1, "teacache": 2}'}, 400, "magcache, teacache"),
    ({"extra_params": '{"fps": 8}', "fps": "8"}, 400, "fps is sent both"),
    ({"frame_interpolation_exp": "1"}, 400, "only applies with enable_frame_interpolation"),
    ({"frame_interpolation_model_path": "rife"}, 400, "only applies with enable_frame_interp"),
    (
        {"enable_frame_interpolation": "true", "frame_interpolation_model_path": "rife"},
        400,
        "takes no interpolation model paths",
    ),
    ({"width": "wide"}, 422, "width must be an integer, got 'wide'"),
    ({"guidance_scale": "lots"}, 422, "guidance_scale must be a number"),
    ({"enable_frame_interpolation": "maybe"}, 422, "true or false"),
    ({"motion_bucket": "3"}, 422, "motion_bucket"),
    ({"model": "sora-2"}, 400, "not served here"),
    ({"width": "8192"}, 422, "<= 4096"),
    ({"true_cfg_scale": "4"}, 400, "true_cfg_scale"),
    ({"sampler": "ddim"}, 400, "unknown sampler 'ddim'"),
    ({"cache": "teacache"}, 400, "unknown cache type 'teacache'"),
    ({"cache": '{"type": "fbcache", "threshold": 0}'}, 400, "threshold must be above 0"),
    ({"cache": "{broken"}, 400, "cache is not valid JSON"),
    ({"image_reference": f"data:image/png;base64,{PNG_1PX}"}, 400, "text-to-video"),
    ({"image_reference": "not even an image"}, 400, "text-to-video"),  # refused unread
]


@pytest.mark.parametrize(("fields", "status", "message"), REFUSED_FORMS)
def test_bad_fields_are_refused_with_a_clear_message(
    video_url: str, fields: dict[str, str], status: int, message: str
) -> None:
    response = create(video_url, prompt="a refused clip", **fields)
    assert_error(response, status, message)


def test_a_missing_prompt_is_a_422_in_the_seed_shape(video_url: str) -> None:
    response = create(video_url, width="32")
    assert_error(response, 422)
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_both_reference_images_at_once_are_refused(video_url: str) -> None:
    files = {
        "prompt": (None, "two images"),
        "input_reference": ("ref.png", b"unused", "image/png"),
        "image_reference": (None, f"data:image/png;base64,{PNG_1PX}"),
    }
    response = requests.post(f"{video_url}/v1/videos", files=files, timeout=30)
    assert_error(response, 400, "not both")


def test_a_text_to_video_model_refuses_an_upload_before_decoding_it(video_url: str) -> None:
    files = {
        "prompt": (None, "an image for a text-to-video model"),
        "input_reference": ("ref.png", b"not a PNG: never decoded", "image/png"),
    }
    response = requests.post(f"{video_url}/v1/videos", files=files, timeout=30)
    error = assert_error(response, 400, "text-to-video model: it takes no input image")
    assert error["param"] == "input_reference"


def test_an_unsupported_body_type_is_415(video_url: str) -> None:
    response = requests.post(
        f"{video_url}/v1/videos", data=b"prompt", headers={"Content-Type": "text/plain"}
    )
    assert_error(response, 415)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"limit": "0"}, "limit must be between"),
        ({"limit": "101"}, "limit must be between"),
        ({"limit": "many"}, "limit must be an integer"),
        ({"order": "sideways"}, "order must be asc or desc"),
        ({"after": "video_" + "0" * 32}, "no video job"),
    ],
)
def test_bad_list_queries_are_400(video_url: str, params: dict[str, str], message: str) -> None:
    response = requests.get(f"{video_url}/v1/videos", params=params, timeout=10)
    assert_error(response, 400, message)


@pytest.mark.parametrize("video_id", ["video_" + "0" * 32, "..%2Fvideos.sqlite3", "video_x"])
def test_unknown_ids_are_404_everywhere(video_url: str, video_id: str) -> None:
    for method, suffix in (("GET", ""), ("GET", "/content"), ("DELETE", "")):
        response = requests.request(method, f"{video_url}/v1/videos/{video_id}{suffix}")
        assert_error(response, 404)


def test_an_image_model_refuses_video_jobs(url: str) -> None:
    """`url` is the shared tiny FLUX server of tests/http/conftest.py."""
    response = create(url, prompt="a video from an image model")
    assert assert_error(response, 400, "image model")["code"] == "model_not_video"
