"""The store as a durable queue: inputs kept until a job finishes, restarts, idempotency keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from omni.storage import DATABASE_FILE, SERVER_RESTARTED, JobInput, JobStatus, VideoStore
from tests.test_storage import FakeClock, make_job

INPUT = JobInput(b'{"prompt": "a boat"}', b"png bytes")


def queue_three_and_stop(directory: Path) -> tuple[str, str, str]:
    """A job running, one queued after it, one queued with no input kept; then the server stops.

    Closing the store changes no record: the records are as a kill -9 would leave them.
    """
    store = VideoStore(directory)
    running, queued, no_input = make_job(), make_job(), make_job()
    store.create(running, INPUT)
    store.mark_progress(running.id, 30)
    store.create(queued, INPUT)
    store.create(no_input)
    store.close()
    return running.id, queued.id, no_input.id


def test_a_job_keeps_its_input_until_it_finishes(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    done, failed = make_job(), make_job()
    store.create(done, INPUT)
    store.create(failed, INPUT)

    assert store.job_input(done.id) == INPUT
    store.complete(done.id, b"mp4")
    store.fail(failed.id, "generation_failed", "broken")
    assert store.job_input(done.id) is None and store.job_input(failed.id) is None
    store.close()


def test_a_restart_queues_running_jobs_again_in_order_and_fails_jobs_without_input(
    tmp_path: Path,
) -> None:
    running, queued, no_input = queue_three_and_stop(tmp_path)
    reopened = VideoStore(tmp_path, resume=True)

    assert reopened.queued_ids() == [running, queued]
    again = reopened.get(running)
    assert (again.status, again.progress) == (JobStatus.QUEUED, 0)
    assert reopened.job_input(running) == INPUT
    assert reopened.get(no_input).error_code == SERVER_RESTARTED
    reopened.close()


def test_a_restart_without_resume_fails_running_jobs_and_queues_the_queued(
    tmp_path: Path,
) -> None:
    running, queued, _ = queue_three_and_stop(tmp_path)
    reopened = VideoStore(tmp_path, resume=False)

    interrupted = reopened.get(running)
    assert (interrupted.status, interrupted.error_code) == (JobStatus.FAILED, SERVER_RESTARTED)
    assert "--no-resume" in interrupted.error_message
    assert reopened.queued_ids() == [queued]
    reopened.close()


def test_a_requeued_job_loses_its_progress(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    job = make_job()
    store.create(job, INPUT)
    store.mark_progress(job.id, 50)
    store.requeue(job.id)

    assert (store.get(job.id).status, store.get(job.id).progress) == (JobStatus.QUEUED, 0)
    store.close()


def test_an_idempotency_key_finds_the_job_that_holds_it(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    first, second = make_job(), make_job()

    made = store.create(first, INPUT, "key-1", "digest-1")
    held = store.create(second, INPUT, "key-1", "digest-2")

    assert made.job == first and held.job == first
    assert held.request_digest == "digest-1"
    assert store.get(second.id) is None  # nothing inserted
    assert store.find_key("key-1") == held
    assert store.find_key("key-2") is None
    store.delete(first.id)
    assert store.create(second, INPUT, "key-1", "digest-2").job == second  # the key is free
    store.close()


def test_an_expired_job_gives_up_its_key(tmp_path: Path) -> None:
    clock = FakeClock()
    store = VideoStore(tmp_path, retention_s=60, clock=clock)
    old, new = make_job(), make_job()
    store.create(old, INPUT, "key")
    store.complete(old.id, b"mp4")
    clock.now += 60

    assert store.find_key("key") is None
    assert store.create(new, INPUT, "key").job == new
    store.close()


def test_a_database_from_before_the_queue_gains_its_columns(tmp_path: Path) -> None:
    job = make_job()
    with sqlite3.connect(tmp_path / DATABASE_FILE) as db:
        db.execute(
            "CREATE TABLE videos (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " created_at INTEGER NOT NULL, completed_at INTEGER, status TEXT NOT NULL,"
            " progress INTEGER NOT NULL, model TEXT NOT NULL, prompt TEXT NOT NULL,"
            " seconds TEXT NOT NULL, size TEXT NOT NULL, error_code TEXT, error_message TEXT)"
        )
        db.execute(
            "INSERT INTO videos (id, created_at, status, progress, model, prompt, seconds, size)"
            " VALUES (?, 1, 'queued', 0, 'm', 'p', '1', '32x32')",
            (job.id,),
        )
    db.close()
    store = VideoStore(tmp_path)

    assert store.get(job.id).error_code == SERVER_RESTARTED  # queued, but with no input kept
    fresh = make_job()
    store.create(fresh, INPUT, "key")
    assert store.job_input(fresh.id) == INPUT
    store.close()
