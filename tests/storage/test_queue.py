"""The store as a durable queue: inputs kept until a job finishes, restarts, idempotency keys."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from omni.jobs import JobStore
from omni.storage import (
    DATABASE_FILE,
    SERVER_RESTARTED,
    JobStatus,
    StorageInUseError,
    VideoStore,
)
from tests.storage.helpers import INPUT, FakeClock, make_job

Opener = Callable[..., JobStore]


def queue_three_and_stop(open_store: Opener) -> tuple[str, str, str]:
    """A job running, one queued after it, one queued with no input kept; then the server stops.

    Closing the store changes no record: the records are as a kill -9 would leave them.
    """
    store = open_store()
    running, queued, no_input = make_job(), make_job(), make_job()
    store.create(running, INPUT)
    store.mark_progress(running.id, 30)
    store.create(queued, INPUT)
    store.create(no_input)
    store.close()
    return running.id, queued.id, no_input.id


def test_a_job_keeps_its_input_until_it_finishes(open_store: Opener) -> None:
    store = open_store()
    done, failed = make_job(), make_job()
    store.create(done, INPUT)
    store.create(failed, INPUT)

    assert store.job_input(done.id) == INPUT
    store.complete(done.id, b"mp4")
    store.fail(failed.id, "generation_failed", "broken")
    assert store.job_input(done.id) is None and store.job_input(failed.id) is None
    store.close()


def test_a_restart_queues_running_jobs_again_in_order_and_fails_jobs_without_input(
    open_store: Opener,
) -> None:
    running, queued, no_input = queue_three_and_stop(open_store)
    reopened = open_store(resume=True)

    assert reopened.queued_ids() == [running, queued]
    again = reopened.get(running)
    assert (again.status, again.progress) == (JobStatus.QUEUED, 0)
    assert reopened.job_input(running) == INPUT
    assert reopened.get(no_input).error_code == SERVER_RESTARTED
    reopened.close()


def test_a_restart_without_resume_fails_running_jobs_and_queues_the_queued(
    open_store: Opener,
) -> None:
    running, queued, _ = queue_three_and_stop(open_store)
    reopened = open_store(resume=False)

    interrupted = reopened.get(running)
    assert (interrupted.status, interrupted.error_code) == (JobStatus.FAILED, SERVER_RESTARTED)
    assert "--no-resume" in interrupted.error_message
    assert reopened.queued_ids() == [queued]
    reopened.close()


def test_a_requeued_job_loses_its_progress(open_store: Opener) -> None:
    store = open_store()
    job = make_job()
    store.create(job, INPUT)
    store.mark_progress(job.id, 50)
    store.requeue(job.id)

    assert (store.get(job.id).status, store.get(job.id).progress) == (JobStatus.QUEUED, 0)
    store.close()


def test_an_idempotency_key_finds_the_job_that_holds_it(open_store: Opener) -> None:
    store = open_store()
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


def test_an_expired_job_gives_up_its_key(open_store: Opener) -> None:
    clock = FakeClock()
    store = open_store(retention_s=60, clock=clock)
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


def test_claims_take_queued_jobs_oldest_first_once_each(open_store: Opener) -> None:
    store = open_store(worker_id="server-a")
    first, second = make_job(), make_job()
    store.create(first, INPUT)
    store.create(second, INPUT)

    claims = [store.claim(), store.claim(), store.claim()]

    assert [claim and claim.job_id for claim in claims] == [first.id, second.id, None]
    assert store.get(first.id).status == JobStatus.QUEUED  # until its first step
    assert store.count_queued() == 0  # claimed jobs are no longer waiting for a server
    assert store.mark_progress(first.id, 10, claims[0].fence)
    assert store.get(first.id).status == JobStatus.IN_PROGRESS


def test_a_worker_whose_lease_was_taken_over_cannot_write(open_store: Opener) -> None:
    """A server that hung past its lease comes back to find its job claimed by another: every
    write it makes with its old fence token is refused."""
    clock = FakeClock()
    first = open_store(worker_id="server-a", clock=clock, lease_s=10)
    job = make_job()
    first.create(job, INPUT)
    stale = first.claim()
    assert first.mark_progress(job.id, 20, stale.fence)
    first.close()  # (a SQLite directory has one server at a time; Postgres takes any number)

    clock.now += 11  # server-a stopped renewing: another server reaps and claims the job
    second = open_store(worker_id="server-b", clock=clock, lease_s=10)
    second.reap()  # the SQLite store reaps when it opens; a shared store reaps as it runs
    assert second.get(job.id).status == JobStatus.QUEUED
    fresh = second.claim()
    assert fresh.job_id == job.id and fresh.fence > stale.fence

    assert not second.renew(stale)
    assert not second.mark_progress(job.id, 90, stale.fence)
    assert not second.complete(job.id, b"stale mp4", fence=stale.fence)
    assert not second.fail(job.id, "internal_error", "stale", stale.fence)
    with pytest.raises(FileNotFoundError):  # the stale completion wrote nothing
        second.open_artifact(job.id)
    assert second.get(job.id).status == JobStatus.QUEUED  # untouched by the stale writes
    assert second.mark_progress(job.id, 50, fresh.fence)
    assert second.complete(job.id, b"fresh mp4", fence=fresh.fence)
    assert second.open_artifact(job.id).read(100) == b"fresh mp4"
    assert not second.complete(job.id, b"again", fence=fresh.fence)  # completed once only


def test_a_renewed_lease_is_not_reaped(open_store: Opener) -> None:
    clock = FakeClock()
    store = open_store(clock=clock, lease_s=10)
    job = make_job()
    store.create(job, INPUT)
    claim = store.claim()
    for _ in range(3):
        clock.now += 6
        assert store.renew(claim)
        assert store.reap() == 0
    assert store.mark_progress(job.id, 40, claim.fence)
    assert store.get(job.id).progress == 40


def test_a_further_front_end_shares_the_owners_store_and_leaves_its_jobs_alone(
    tmp_path: Path,
) -> None:
    owner = VideoStore(tmp_path)
    running, queued = make_job(), make_job()
    owner.create(running, INPUT)
    claim = owner.claim()
    assert claim is not None and owner.mark_progress(running.id, 30, claim.fence)

    other = VideoStore(tmp_path, owner=False)  # no StorageInUseError, and no recovery

    still = other.get(running.id)
    assert (still.status, still.progress) == (JobStatus.IN_PROGRESS, 30)
    other.create(queued, INPUT)
    assert owner.queued_ids() == [queued.id]  # queued by the other, claimed by the owner
    assert owner.claim().job_id == queued.id
    assert other.delete(running.id)
    assert not owner.mark_progress(running.id, 60, claim.fence)  # the owner's run stops
    with pytest.raises(StorageInUseError):
        VideoStore(tmp_path)  # a second owner is still refused
    other.close()
    owner.close()
