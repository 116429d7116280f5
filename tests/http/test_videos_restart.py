"""A server restarted on the same storage keeps finished jobs and runs (or fails) the rest."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.http.servers import (
    VIDEO_SERVED_NAME,
    ServerProcess,
    server_thread,
    video_config,
    wait_until,
)
from tests.http.videos import (
    LONG_JOB,
    assert_error,
    assert_mp4,
    create,
    wait_for_job,
    wait_until_running,
)
from tests.test_media import decode

KEPT_JOB = {"prompt": "kept", "size": "48x32", "num_frames": 5, "fps": 6, "num_inference_steps": 1}
# Seconds on a CPU: still running when the server is killed, done soon after the restart.
SLOW_JOB = {"prompt": "interrupted", "size": "32x32", "num_frames": 5, "num_inference_steps": 1000}
QUICK_JOB = {"prompt": "waiting", "size": "32x32", "num_frames": 5, "num_inference_steps": 2}


def serve_args(model: Path, storage: Path, *extra: str) -> list[str]:
    return [
        *("--model", str(model), "--served-model-name", VIDEO_SERVED_NAME),
        *("--storage-path", str(storage), "--max-num-running", "1", "--max-num-waiting", "1"),
        *extra,
    ]


def kill_with_jobs_running_and_queued(model: Path, storage: Path, log: Path) -> dict[str, str]:
    """kill -9 a server while one job runs and three wait; the jobs' statuses at the kill."""
    server = ServerProcess(serve_args(model, storage), log)
    try:
        server.wait_healthy()
        running = create(server.url, **SLOW_JOB).json()["id"]
        queued = [create(server.url, **QUICK_JOB, seed=seed).json()["id"] for seed in range(3)]
        wait_until_running(server.url, running)
        jobs = requests.get(f"{server.url}/v1/videos", params={"order": "asc"}, timeout=10)
    finally:
        server.process.kill()
        server.process.wait(30)
    statuses = {job["id"]: job["status"] for job in jobs.json()["data"]}
    assert list(statuses) == [running, *queued]
    return statuses


def restart_and_finish(model: Path, storage: Path, log: Path, *extra: str) -> list[dict[str, Any]]:
    """Restart on the same storage; every job once none is queued or in progress any more."""
    server = ServerProcess(serve_args(model, storage, *extra), log)
    try:
        server.wait_healthy()
        listed = requests.get(f"{server.url}/v1/videos", params={"order": "asc"}, timeout=10)
        return [wait_for_job(server.url, job["id"]) for job in listed.json()["data"]]
    finally:
        server.stop()


def test_after_a_kill_9_the_running_and_the_queued_jobs_all_complete(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    before = kill_with_jobs_running_and_queued(tiny_wan_dir, storage, tmp_path / "first.log")
    after = restart_and_finish(tiny_wan_dir, storage, tmp_path / "second.log")

    assert list(before.values()) == ["in_progress", "queued", "queued", "queued"]
    assert [job["id"] for job in after] == list(before)
    assert [(job["status"], job["error"]) for job in after] == [("completed", None)] * 4


def test_with_no_resume_the_running_job_fails_as_server_restarted_and_queued_ones_complete(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    before = kill_with_jobs_running_and_queued(tiny_wan_dir, storage, tmp_path / "first.log")
    after = restart_and_finish(tiny_wan_dir, storage, tmp_path / "second.log", "--no-resume")

    assert list(before.values()) == ["in_progress", "queued", "queued", "queued"]
    assert after[0]["status"] == "failed"
    assert after[0]["error"]["code"] == "server_restarted"
    assert [job["status"] for job in after[1:]] == ["completed"] * 3


def test_a_server_restarted_with_no_resume_serves_finished_jobs_and_fails_running_ones(
    tiny_wan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = tmp_path / "storage"
    with server_thread(video_config(tiny_wan_dir, storage)) as first:
        finished = create(first.url, **KEPT_JOB).json()
        assert wait_for_job(first.url, finished["id"])["status"] == "completed"
        original = requests.get(f"{first.url}/v1/videos/{finished['id']}/content", timeout=10)
        # Larger than LONG_JOB: 1000 steps of it can end within the server's stop, which gives
        # handlers up to GRACEFUL_SHUTDOWN_S before the job is cancelled.
        running = create(first.url, **{**LONG_JOB, "size": "64x64", "num_frames": "33"}).json()
        wait_until_running(first.url, running["id"])
    # Started as `python -m omni.serve`, finding the storage through the seed's variable.
    monkeypatch.setenv("VLLM_OMNI_STORAGE_PATH", str(storage))
    monkeypatch.delenv("OMNI_STORAGE_PATH", raising=False)
    second = ServerProcess(
        ["--model", str(tiny_wan_dir), "--served-model-name", VIDEO_SERVED_NAME, "--no-resume"],
        tmp_path / "log",
    )
    try:
        second.wait_healthy()
        listed = requests.get(f"{second.url}/v1/videos", params={"order": "asc"}, timeout=10)
        content = requests.get(f"{second.url}/v1/videos/{finished['id']}/content", timeout=10)
        interrupted = requests.get(f"{second.url}/v1/videos/{running['id']}", timeout=10).json()
        interrupted_content = requests.get(
            f"{second.url}/v1/videos/{running['id']}/content", timeout=10
        )
    finally:
        second.stop()

    jobs = {job["id"]: job for job in listed.json()["data"]}
    assert list(jobs) == [finished["id"], running["id"]]
    assert jobs[finished["id"]]["status"] == "completed"
    assert content.content == original.content
    assert_mp4(decode(content.content), num_frames=5, fps=6, width=48, height=32)
    assert interrupted["status"] == "failed"
    assert interrupted["error"]["code"] == "server_restarted"
    assert assert_error(interrupted_content, 404, "failed")["code"] == "video_failed"


def test_finished_jobs_expire_after_the_retention_and_leave_the_disk(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    # 3 s: completed_at is a whole second, so a job lives between 2 and 3 s after it finishes.
    config = replace(video_config(tiny_wan_dir, storage), video_retention_seconds=3)
    with server_thread(config) as server:
        job = create(server.url, **KEPT_JOB).json()
        done = wait_for_job(server.url, job["id"])
        mp4 = storage / f"{job['id']}.mp4"
        kept_file = mp4.is_file()

        def gone() -> bool:
            record = requests.get(f"{server.url}/v1/videos/{job['id']}", timeout=10)
            return record.status_code == 404

        wait_until(gone, 10, "the job to expire")
        wait_until(lambda: not mp4.exists(), 10, "the sweep to remove its file")
        listed = requests.get(f"{server.url}/v1/videos", timeout=10).json()["data"]
        content = requests.get(f"{server.url}/v1/videos/{job['id']}/content", timeout=10)

    assert done["status"] == "completed" and kept_file
    assert done["expires_at"] == done["completed_at"] + 3
    assert listed == []
    assert_error(content, 404)
