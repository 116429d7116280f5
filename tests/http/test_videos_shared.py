"""Two servers on one Postgres job store and one S3 artifact store: either answers for every
job, both run jobs, and a job whose server is killed mid-run is finished by the other once its
lease runs out, completed exactly once."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from tests.http.servers import VIDEO_SERVED_NAME, ServerProcess
from tests.http.test_videos import create, wait_for_job, wait_until_running
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
        workers = {records(database)[job_id][2] for job_id in made}
        assert workers == {f"{server_host()}:{server.process.pid}" for server in servers}

        # One server dies mid-job: the other finishes the job once the lease runs out.
        slow = create(first.url, **SLOW_JOB).json()["id"]
        wait_until_running(second.url, slow)
        victim = next(
            s for s in servers if records(database)[slow][2].endswith(f":{s.process.pid}")
        )
        survivor = second if victim is first else first
        queued = [create(survivor.url, **QUICK_JOB, seed=10 + i).json()["id"] for i in range(2)]
        victim.process.kill()
        victim.process.wait(30)
        finished = [
            wait_for_job(survivor.url, job_id, TAKEOVER_TIMEOUT_S) for job_id in [slow, *queued]
        ]
        assert [(job["status"], job["error"]) for job in finished] == [("completed", None)] * 3
        _, fence, worker = records(database)[slow]
        assert worker == f"{server_host()}:{survivor.process.pid}"
        assert fence >= 2  # claimed again after the victim's lease ran out
        assert download(survivor.url, slow).status_code == 200
    finally:
        for server in servers:
            server.stop()

    every = [*made, slow, *queued]
    assert completions(*servers) == Counter(every)  # each job completed once, none lost
    assert {job_id: row[0] for job_id, row in records(database).items()} == dict.fromkeys(
        every, "completed"
    )


def server_host() -> str:
    import socket

    return socket.gethostname()
