"""Video jobs under clients that misbehave: disconnects mid-submit, bad bytes, racing deletes."""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, suppress
from pathlib import Path
from typing import Any

import pytest
import requests

from omni.engine import Progress
from omni.errors import ReplicaLostError
from omni.http.video_jobs import RERUNS_AFTER_REPLICA_LOSS
from omni.http.videos import VIDEO_JOBS
from omni.request import GenerationParams
from omni.storage import JobStatus, KeyedJob, VideoJob, VideoStore
from tests.http.servers import ServerProcess, ServerThread
from tests.http.videos import assert_error, create, quick_job, wait_for_job
from tests.storage.helpers import make_job

GATE_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 60.0  # a refused start exits in seconds; a served one would hang here


def test_a_submit_cancelled_during_the_insert_still_runs_its_job(
    video_server: ServerThread,
) -> None:
    """aiohttp cancels a handler whose client left; the job it inserted must not stay queued."""
    jobs = video_server.server.app[VIDEO_JOBS]
    store = jobs.store
    inserted: list[VideoJob] = []
    release = threading.Event()
    insert = store.create

    def held_insert(job: VideoJob, *args: Any) -> KeyedJob:
        inserted.append(job)
        release.wait(GATE_TIMEOUT_S)
        return insert(job, *args)

    async def submit_then_cancel() -> None:
        params = jobs.engine.resolve(
            GenerationParams(prompt="left early", num_inference_steps=1, num_frames=1)
        )
        submit = asyncio.create_task(jobs.submit(params))
        while not inserted:
            await asyncio.sleep(0.01)
        submit.cancel()  # what aiohttp does when the client disconnects
        with suppress(asyncio.CancelledError):
            await submit
        release.set()

    store.create = held_insert  # the real insert, held until the handler is cancelled
    try:
        video_server.call(submit_then_cancel())
    finally:
        release.set()
        del store.create
    job = wait_for_job(video_server.url, inserted[0].id, timeout=GATE_TIMEOUT_S)
    assert job["status"] == "completed"


def test_a_second_server_on_a_storage_path_in_use_exits_saying_so(
    tiny_wan_dir: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    holder = VideoStore(storage)
    job = make_job()
    holder.create(job)
    second = ServerProcess(
        ["--model", str(tiny_wan_dir), "--storage-path", str(storage)], tmp_path / "log"
    )
    try:
        returncode = second.process.wait(EXIT_TIMEOUT_S)
        assert holder.get(job.id).status == JobStatus.QUEUED
    finally:
        second.stop()
        holder.close()
    assert returncode != 0
    log = (tmp_path / "log").read_text()
    assert f"storage path {storage} is in use by another omni server (pid {os.getpid()})" in log
    assert "Traceback" not in log


# Bytes no client should send: each is the client's error (400), never the server's (500) -------

DEEP = "[" * 2000 + "]" * 2000  # past the JSON parsers' nesting limits
DEEP_OBJECT = '{"a": ' * 2000 + "1" + "}" * 2000
FORM_HEAD = 'Content-Disposition: form-data; name="prompt"\r\n\r\n'
BAD_BODIES = [
    ("application/json", f'{{"prompt": "deep", "extra_params": {DEEP}}}', "invalid_json"),
    ("application/json", f'{{"prompt": "deep", "user": {DEEP}}}', "invalid_json"),
    ("multipart/form-data", f"--b\r\n{FORM_HEAD}a clip\r\n--b--\r\n", "invalid_form"),
    ("multipart/form-data; boundary=b", f"--b\r\n{FORM_HEAD}a cl", "invalid_form"),
    (
        "multipart/form-data; boundary=b",
        b"--b\r\n" + FORM_HEAD.encode() + b"\xff\xfe\r\n--b--\r\n",
        "invalid_form",
    ),
    ("application/x-www-form-urlencoded", b"prompt=\xff", "invalid_form"),
]


@pytest.mark.parametrize(("content_type", "body", "code"), BAD_BODIES)
def test_unreadable_bodies_are_400(
    video_url: str, content_type: str, body: str | bytes, code: str
) -> None:
    response = requests.post(
        f"{video_url}/v1/videos", data=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert assert_error(response, 400)["code"] == code


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"extra_params": DEEP}, "extra_params nests too deeply"),
        ({"lora": DEEP}, "lora nests too deeply"),
        ({"seconds": "1e308"}, "seconds must be at most"),
        ({"seconds": "1e308", "fps": "16"}, "seconds must be at most"),
    ],
)
def test_fields_past_every_limit_are_400(
    video_url: str, fields: dict[str, str], message: str
) -> None:
    assert_error(create(video_url, prompt="too much", **fields), 400, message)


def test_a_limit_of_unicode_digits_is_400(video_url: str) -> None:
    response = requests.get(f"{video_url}/v1/videos?limit=%C2%B2", timeout=10)  # "²"
    assert_error(response, 400, "limit must be an integer")


def test_of_two_racing_deletes_of_one_job_only_one_succeeds(video_server: ServerThread) -> None:
    """Both find the job; the store deletes it once, so the other answers 404."""
    url = video_server.url
    job = quick_job(url)
    wait_for_job(url, job["id"])
    store = video_server.server.app[VIDEO_JOBS].store
    delete = store.delete
    both_inside = threading.Barrier(2, timeout=GATE_TIMEOUT_S)

    def delete_together(job_id: str) -> bool:
        both_inside.wait()  # both handlers have found the job before either deletes it
        return delete(job_id)

    def delete_over_http() -> requests.Response:
        return requests.delete(f"{url}/v1/videos/{job['id']}", timeout=GATE_TIMEOUT_S)

    store.delete = delete_together
    try:
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda _: delete_over_http(), range(2)))
    finally:
        del store.delete
    assert sorted(r.status_code for r in responses) == [200, 404]
    refused = next(r for r in responses if r.status_code == 404)
    assert assert_error(refused, 404)["code"] == "video_not_found"


@pytest.mark.parametrize("losses", [RERUNS_AFTER_REPLICA_LOSS, RERUNS_AFTER_REPLICA_LOSS + 1])
def test_a_job_whose_replica_dies_runs_again_and_fails_once_it_kills_one_too_many(
    video_server: ServerThread, losses: int
) -> None:
    """With replicas, a replica's death mid-job reaches the job as ReplicaLostError (the Ray
    tests show that half); here the real engine's stream stands in for the replica."""
    engine = video_server.server.app[VIDEO_JOBS].engine
    real_stream = engine.stream
    runs: list[str | None] = []

    async def stream_on_a_dying_replica(params: GenerationParams, request_id: str | None = None):
        runs.append(request_id)
        if len(runs) > losses:
            async for event in real_stream(params, request_id):
                yield event
            return
        async with aclosing(real_stream(params, request_id)) as events:
            async for event in events:
                yield event
                if isinstance(event, Progress):
                    break  # the replica dies after a step: the engine's request is aborted
        raise ReplicaLostError("the replica running this request died")

    engine.stream = stream_on_a_dying_replica
    try:
        job = quick_job(video_server.url, num_inference_steps=3)
        finished = wait_for_job(video_server.url, job["id"])
    finally:
        del engine.stream
    assert len(runs) == min(losses + 1, RERUNS_AFTER_REPLICA_LOSS + 1)
    assert len(set(runs)) == len(runs)  # each run is a request of its own in the engine
    assert all(run.startswith(job["id"]) for run in runs)
    if losses <= RERUNS_AFTER_REPLICA_LOSS:
        assert finished["status"] == "completed", finished
        video = requests.get(f"{video_server.url}/v1/videos/{job['id']}/content", timeout=30)
        assert video.status_code == 200 and video.content
    else:
        assert finished["status"] == "failed"
        assert finished["error"]["code"] == "replica_lost"
        assert "replica" in finished["error"]["message"]
