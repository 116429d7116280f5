"""Video jobs on a real server with the tiny Wan model: the SDK and raw HTTP, from creation
through progress, listing and download to deletion."""

from __future__ import annotations

import openai
import pytest
import requests
from openai import OpenAI

from tests.http.servers import (
    VIDEO_SERVED_NAME,
    ServerThread,
    stats,
    wait_until,
)
from tests.http.videos import (
    LONG_JOB,
    assert_error,
    assert_mp4,
    client,
    create,
    quick_job,
    valid_num_frames,
    wait_for_job,
    wait_until_running,
)
from tests.test_media import decode

__all__ = ["client"]  # the module fixture, shared

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK's Sora notice


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
