"""SIGTERM: new requests get 503, work in flight finishes, queued jobs stay queued; it exits."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omni.storage import JobStatus, VideoStore
from tests.http.servers import VIDEO_SERVED_NAME, ServerProcess, is_healthy, stats, wait_until
from tests.http.test_videos_queue import QUICK_JOB, engine_holds, post_sync
from tests.http.videos import LONG_JOB, assert_error, create, wait_until_running

EXIT_TIMEOUT_S = 120.0


def start(model: Path, storage: Path, log: Path, shutdown_timeout: float) -> ServerProcess:
    args = [
        *("--model", str(model), "--served-model-name", VIDEO_SERVED_NAME),
        *("--storage-path", str(storage), "--max-num-running", "1", "--max-num-waiting", "1"),
        *("--shutdown-timeout", str(shutdown_timeout)),
    ]
    server = ServerProcess(args, log)
    server.wait_healthy()
    return server


def terminate(server: ServerProcess) -> None:
    """SIGTERM, then wait until the server refuses new requests."""
    server.process.send_signal(signal.SIGTERM)
    wait_until(lambda: not is_healthy(server.url), 30, "the server to start draining")


def statuses(storage: Path, *job_ids: str) -> list[JobStatus]:
    store = VideoStore(storage)  # the lock is free: the server has exited
    try:
        return [store.get(job_id).status for job_id in job_ids]
    finally:
        store.close()


def test_sigterm_finishes_work_in_flight_refuses_new_work_and_leaves_queued_jobs_queued(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    server = start(tiny_wan_dir, storage, tmp_path / "server.log", EXIT_TIMEOUT_S)
    try:
        with ThreadPoolExecutor(1) as pool:
            sync = pool.submit(post_sync, server.url, 0)
            wait_until(lambda: stats(server.url)["num_running"] == 1, 60, "the sync request")
            running = create(server.url, **QUICK_JOB).json()["id"]  # waits in the engine
            wait_until(lambda: engine_holds(server.url) == 2, 60, "the job in the engine")
            queued = create(server.url, **QUICK_JOB).json()["id"]  # waits in the store
            terminate(server)
            refused = create(server.url, **QUICK_JOB)
            finished_sync = sync.result()
        exit_code = server.process.wait(EXIT_TIMEOUT_S)
    finally:
        server.stop()

    assert finished_sync.status_code == 200
    assert assert_error(refused, 503, "shutting down")["code"] == "server_shutting_down"
    assert int(refused.headers["Retry-After"]) >= 1
    assert exit_code == 0
    assert statuses(storage, running, queued) == [JobStatus.COMPLETED, JobStatus.QUEUED]


def test_a_job_still_running_at_the_shutdown_timeout_is_stopped_and_resumes_later(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    server = start(tiny_wan_dir, storage, tmp_path / "server.log", shutdown_timeout=1)
    try:
        job = create(server.url, **LONG_JOB).json()["id"]
        wait_until_running(server.url, job)
        terminate(server)
        exit_code = server.process.wait(EXIT_TIMEOUT_S)
    finally:
        server.stop()

    assert exit_code == 0
    assert statuses(storage, job) == [JobStatus.QUEUED]  # in progress, queued again on open
