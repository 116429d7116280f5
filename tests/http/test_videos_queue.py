"""Video jobs are a durable queue: an accepted job waits for room and runs; a full queue is 503."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from omni.http import ServerConfig
from tests.http.servers import server_thread, stats, video_config, wait_until
from tests.http.videos import LONG_JOB, assert_error, create, wait_for_job

# About 4 s each on a CPU: the engine stays full while jobs are posted.
SLOW_SYNC = {"prompt": "a slow sync clip", "num_inference_steps": "1000", "size": "32x32"}
QUICK_JOB = {"prompt": "a queued clip", "num_inference_steps": 2, "num_frames": 5, "size": "32x32"}


def limited(model: Path, storage: Path, running: int, waiting: int) -> ServerConfig:
    config = video_config(model, storage)
    engine = replace(config.engine, max_num_running=running, max_num_waiting=waiting)
    return replace(config, engine=engine)


def engine_holds(url: str) -> int:
    counters = stats(url)
    return counters["num_running"] + counters["num_waiting"]


def post_sync(url: str, seed: int) -> requests.Response:
    data = {**SLOW_SYNC, "num_frames": "5", "seed": str(seed)}
    return requests.post(f"{url}/v1/videos/sync", data=data, timeout=300)


def test_jobs_accepted_while_sync_requests_fill_the_engine_all_complete(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    """Issue 11, finding 5: these jobs used to fail at once with engine_overloaded."""
    config = limited(tiny_wan_dir, tmp_path / "storage", running=4, waiting=8)
    with server_thread(config) as server, ThreadPoolExecutor(12) as pool:
        syncs = [pool.submit(post_sync, server.url, seed) for seed in range(12)]
        wait_until(lambda: engine_holds(server.url) == 12, 60, "12 sync requests in the engine")
        accepted = [create(server.url, **QUICK_JOB, seed=seed) for seed in range(6)]
        sync_statuses = [sync.result().status_code for sync in syncs]
        finished = [wait_for_job(server.url, job.json()["id"], timeout=300) for job in accepted]

    assert [job.status_code for job in accepted] == [200] * 6
    assert {job.json()["status"] for job in accepted} == {"queued"}
    assert [(job["status"], job["error"]) for job in finished] == [("completed", None)] * 6
    assert sync_statuses == [200] * 12


def test_a_full_job_queue_answers_503_with_retry_after_and_queued_jobs_still_run(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    config = limited(tiny_wan_dir, tmp_path / "storage", running=1, waiting=1)
    config = replace(config, max_queued_video_jobs=1)
    with server_thread(config) as server:
        running = [create(server.url, **LONG_JOB).json() for _ in range(2)]
        wait_until(lambda: engine_holds(server.url) == 2, 60, "both long jobs in the engine")
        queued = create(server.url, **QUICK_JOB)
        refused = create(server.url, **QUICK_JOB)
        still_queued = requests.get(f"{server.url}/v1/videos/{queued.json()['id']}", timeout=10)
        for job in running:
            requests.delete(f"{server.url}/v1/videos/{job['id']}", timeout=30)
        done = wait_for_job(server.url, queued.json()["id"])

    assert queued.status_code == 200
    assert assert_error(refused, 503, "--max-queued-video-jobs")["code"] == "video_queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    assert still_queued.json()["status"] == "queued"
    assert done["status"] == "completed"


def post_keyed(url: str, key: str, as_json: bool = False, **fields: Any) -> requests.Response:
    headers = {"Idempotency-Key": key}
    if as_json:
        return requests.post(f"{url}/v1/videos", json=fields, headers=headers, timeout=30)
    form = {name: (None, str(value)) for name, value in fields.items()}
    return requests.post(f"{url}/v1/videos", files=form, headers=headers, timeout=30)


def test_a_repeated_idempotency_key_returns_the_same_job(video_url: str) -> None:
    key = f"retry-{uuid.uuid4()}"
    first = post_keyed(video_url, key, **QUICK_JOB)
    again = post_keyed(video_url, key, as_json=True, **QUICK_JOB)  # another encoding, same request
    done = wait_for_job(video_url, first.json()["id"])
    after = post_keyed(video_url, key, **QUICK_JOB)
    listed = requests.get(f"{video_url}/v1/videos", params={"limit": 100}, timeout=10).json()

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["id"] == first.json()["id"]
    assert after.json() == done  # the job as it is now: completed
    assert [job["id"] for job in listed["data"]].count(first.json()["id"]) == 1
    assert sum(job["prompt"] == QUICK_JOB["prompt"] for job in listed["data"]) == 1


def test_an_idempotency_key_reused_for_another_request_is_409(video_url: str) -> None:
    key = f"reused-{uuid.uuid4()}"
    first = post_keyed(video_url, key, **{**QUICK_JOB, "prompt": "the first request"})
    other = post_keyed(video_url, key, **{**QUICK_JOB, "prompt": "another request"})
    wait_for_job(video_url, first.json()["id"])

    assert first.status_code == 200
    assert assert_error(other, 409, first.json()["id"])["code"] == "idempotency_key_reused"


def test_an_idempotency_key_over_255_characters_is_400(video_url: str) -> None:
    response = post_keyed(video_url, "k" * 256, **QUICK_JOB)
    assert assert_error(response, 400, "Idempotency-Key")["code"] == "invalid_idempotency_key"
