"""Finished jobs expire after the retention, across restarts too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from omni.jobs import JobStore
from omni.storage import JobStatus, VideoStore
from tests.storage.helpers import FakeClock, content_path, make_job, run_to_completion


def test_finished_jobs_expire_after_the_retention(open_store: Callable[..., JobStore]) -> None:
    clock = FakeClock()
    store = open_store(retention_s=60, clock=clock)
    completed, failed, running = make_job(), make_job(), make_job()
    run_to_completion(store, completed)
    store.create(failed)
    store.fail(failed.id, "generation_failed", "out of memory")
    store.create(running)
    store.mark_progress(running.id, 10)

    assert store.get(completed.id).to_json()["expires_at"] == int(clock.now) + 60
    assert store.get(failed.id).expires_at == int(clock.now) + 60
    assert store.get(running.id).expires_at is None  # unfinished jobs never expire
    clock.now += 59
    assert store.delete_expired() == 0
    assert len(store.list().jobs) == 3

    clock.now += 1  # at expires_at: gone from reads at once, from disk at the next sweep
    assert store.get(completed.id) is None and store.get(failed.id) is None
    assert [job.id for job in store.list().jobs] == [running.id]
    assert content_path(store, completed.id).exists()
    assert store.delete_expired() == 2
    assert not content_path(store, completed.id).exists()
    assert store.get(running.id).status == JobStatus.IN_PROGRESS
    store.close()


def test_a_store_without_retention_keeps_jobs_and_reports_no_expiry(
    open_store: Callable[..., JobStore],
) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    job = make_job()
    run_to_completion(store, job)
    clock.now += 10 * 365 * 86400

    assert store.delete_expired() == 0
    assert store.get(job.id).to_json()["expires_at"] is None
    store.close()


def test_expiry_holds_across_a_restart(open_store: Callable[..., JobStore]) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)  # the first server kept jobs forever
    job = make_job()
    run_to_completion(store, job)
    store.close()

    clock.now += 3600
    reopened = open_store(retention_s=600, clock=clock)
    assert reopened.get(job.id) is None
    assert reopened.delete_expired() == 1
    reopened.close()


def test_a_retention_under_a_second_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        VideoStore(tmp_path, retention_s=0)
