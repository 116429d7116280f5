"""Two servers on one Postgres job store and one S3 artifact store: either answers for every
job, both run jobs, and a job whose server is killed mid-run is finished by the other once its
lease runs out, completed exactly once."""

from __future__ import annotations

import re
import signal
import socket
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from tests.http.servers import VIDEO_SERVED_NAME, ServerProcess, wait_until
from tests.http.videos import create, wait_for_job, wait_until_running
from tests.services import new_bucket, new_database
from tests.test_media import decode

LEASE_S = 3  # short, so the survivor takes over soon after the kill
QUICK_JOB = {
    "prompt": "shared",
    "size": "32x32",
    "num_frames": 5,
    "fps": 8,
    "num_inference_steps": 2,
}
# Seconds on a CPU: still running when its server is killed.
SLOW_JOB = {"prompt": "interrupted", "size": "32x32", "num_frames": 5, "num_inference_steps": 400}
TAKEOVER_TIMEOUT_S = 300.0
COMPLETED_LINE = re.compile(r"video job (video_[0-9a-f]{32}) completed \(fence (\d+)\)")


def serve_args(model: Path, storage: Path, database: str, bucket: str, endpoint: str) -> list[str]:
    return [
        *("--model", str(model), "--served-model-name", VIDEO_SERVED_NAME),
        *("--storage-path", str(storage), "--max-num-running", "1", "--max-num-waiting", "1"),
        *("--job-store", database, "--artifact-store", f"s3://{bucket}/videos"),
        *("--s3-endpoint-url", endpoint, "--lease-seconds", str(LEASE_S)),
    ]


def records(database: str) -> dict[str, tuple[str, int, str]]:
    """Each job's (status, fence, worker) as the store holds them."""
    import psycopg

    with psycopg.connect(database) as db:
        rows = db.execute("SELECT id, status, fence, worker FROM videos").fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def completions(*servers: ServerProcess) -> Counter[str]:
    """How many times each job was completed, by the servers' own logs."""
    return Counter(
        match[1]
        for server in servers
        for match in COMPLETED_LINE.finditer(server.log_path.read_text())
    )


def runner(job_id: str, database: str, servers: list[ServerProcess]) -> ServerProcess | None:
    """The server whose worker id (host:pid) the job's record holds: the one that runs or ran it."""
    worker = records(database)[job_id][2]
    return next((s for s in servers if worker == f"{socket.gethostname()}:{s.process.pid}"), None)


def running_on(
    job_id: str, database: str, servers: list[ServerProcess]
) -> tuple[ServerProcess, ServerProcess]:
    """Once the job runs: the server running it, and the other one."""
    wait_until_running(servers[0].url, job_id)
    running = runner(job_id, database, servers)
    assert running is not None
    return running, next(s for s in servers if s is not running)


def download(url: str, job_id: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{url}/v1/videos/{job_id}/content", timeout=30, **kwargs)


def test_two_servers_share_jobs_and_one_finishes_what_a_killed_one_ran(
    tiny_wan_dir: Path, tmp_path: Path, postgres_server_url: str, s3_endpoint: str
) -> None:
    database, bucket = new_database(postgres_server_url), new_bucket(s3_endpoint)
    args = [
        serve_args(tiny_wan_dir, tmp_path / name, database, bucket, s3_endpoint) for name in "ab"
    ]
    first = ServerProcess(args[0], tmp_path / "a.log")
    second = ServerProcess([*args[1], "--presigned-urls"], tmp_path / "b.log")
    servers = [first, second]
    try:
        for server in servers:
            server.wait_healthy()
        # Created on one, polled, listed and downloaded on the other.
        made = [
            create(server.url, **QUICK_JOB, seed=seed).json()["id"]
            for seed, server in enumerate(servers * 2)
        ]
        done = [wait_for_job(servers[(i + 1) % 2].url, job_id) for i, job_id in enumerate(made)]
        assert [job["status"] for job in done] == ["completed"] * 4
        for server in servers:
            listed = requests.get(f"{server.url}/v1/videos", params={"order": "asc"}, timeout=10)
            assert [job["id"] for job in listed.json()["data"]] == made
        streamed = download(first.url, made[1])
        assert streamed.status_code == 200
        assert len(decode(streamed.content).frames) == 5
        redirect = download(second.url, made[0], allow_redirects=False)
        assert redirect.status_code == 307 and redirect.headers["Location"].startswith(s3_endpoint)
        assert download(second.url, made[2]).content == download(first.url, made[2]).content
        assert {runner(job_id, database, servers) for job_id in made} == set(servers)

        # A server that hangs past its lease loses its job to the other; when it wakes, its
        # writes carry a stale fence token and are refused, so the job completes once.
        hung_job = create(first.url, **SLOW_JOB).json()["id"]
        hung, other = running_on(hung_job, database, servers)
        hung.process.send_signal(signal.SIGSTOP)
        try:
            wait_until(
                lambda: runner(hung_job, database, servers) is other,
                TAKEOVER_TIMEOUT_S,
                "the other server to take the hung server's job over",
            )
        finally:
            hung.process.send_signal(signal.SIGCONT)
        assert wait_for_job(other.url, hung_job, TAKEOVER_TIMEOUT_S)["status"] == "completed"
        wait_until(
            lambda: re.search(
                f"video job {hung_job}: (lease lost|deleted or taken over)",
                hung.log_path.read_text(),
            ),
            TAKEOVER_TIMEOUT_S,
            "the woken server to give the job up",
        )

        # One server dies mid-job: the other finishes the job once the lease runs out.
        slow = create(first.url, **SLOW_JOB).json()["id"]
        victim, survivor = running_on(slow, database, servers)
        queued = [create(survivor.url, **QUICK_JOB, seed=10 + i).json()["id"] for i in range(2)]
        victim.process.kill()
        victim.process.wait(30)
        finished = [
            wait_for_job(survivor.url, job_id, TAKEOVER_TIMEOUT_S) for job_id in [slow, *queued]
        ]
        assert [(job["status"], job["error"]) for job in finished] == [("completed", None)] * 3
        assert runner(slow, database, servers) is survivor
        assert records(database)[slow][1] >= 2  # claimed again after the victim's lease ran out
        assert download(survivor.url, slow).status_code == 200
    finally:
        for server in servers:
            server.stop()

    every = [*made, hung_job, slow, *queued]
    assert completions(*servers) == Counter(every)  # each job completed once, none lost
    assert {job_id: row[0] for job_id, row in records(database).items()} == dict.fromkeys(
        every, "completed"
    )
