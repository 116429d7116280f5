"""The SQLite store on its directory: restarts, stray files, atomic writes, one server at a
time, and databases an older omni wrote."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from omni.jobs.artifacts import artifact_name
from omni.storage import (
    SERVER_RESTARTED,
    JobStatus,
    StorageInUseError,
    VideoStore,
    new_job_id,
    write_atomically,
)
from tests.storage.helpers import make_job, run_to_completion


def test_restart_fails_unfinished_jobs_and_keeps_completed_ones(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    queued, running, completed = make_job(), make_job(), make_job()
    store.create(queued)
    store.create(running)
    store.mark_progress(running.id, 50)
    run_to_completion(store, completed, b"kept")
    store.close()

    reopened = VideoStore(tmp_path)
    for job in (queued, running):
        record = reopened.get(job.id)
        assert record.status == JobStatus.FAILED
        assert record.error_code == SERVER_RESTARTED
    assert reopened.get(completed.id).status == JobStatus.COMPLETED
    assert reopened.content_path(completed.id).read_bytes() == b"kept"
    reopened.close()


def test_restart_sweeps_temp_files_and_files_without_a_completed_record(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    running = make_job()
    store.create(running)
    store.mark_progress(running.id, 10)
    store.close()
    # A crash after the MP4 was renamed into place but before the record said completed,
    # a crash during a write, and a crash between deleting a record and its file.
    store.content_path(running.id).write_bytes(b"unowned")
    temp = tmp_path / f".{new_job_id()}.mp4.tmp-0123abcd"
    temp.write_bytes(b"partial")
    orphan = tmp_path / f"{new_job_id()}.mp4"
    orphan.write_bytes(b"orphan")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not ours")

    reopened = VideoStore(tmp_path)
    assert not reopened.content_path(running.id).exists()
    assert not temp.exists()
    assert not orphan.exists()
    assert unrelated.exists()
    reopened.close()


def test_atomic_write_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    def replace(source: Any, target: Any) -> None:
        calls.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomically(tmp_path / "out.mp4", b"data")
    assert calls == ["fsync file", "rename", "fsync dir"]
    assert (tmp_path / "out.mp4").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.mp4"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_the_database_runs_in_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    VideoStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "videos.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_store_on_the_same_directory_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    """Opening would fail the holder's live jobs and sweep its files, so it must not happen."""
    first = VideoStore(tmp_path / "videos")
    live = make_job()
    first.create(live)
    with pytest.raises(
        StorageInUseError, match=f"in use by another omni server \\(pid {os.getpid()}\\)"
    ):
        VideoStore(tmp_path / "videos")
    assert first.get(live.id).status == JobStatus.QUEUED  # not failed by the refused open
    first.close()
    second = VideoStore(tmp_path / "videos")
    try:
        assert second.get(live.id).error_code == SERVER_RESTARTED
    finally:
        second.close()


def test_a_database_of_the_first_schema_gains_the_newer_columns_and_keeps_its_jobs(
    tmp_path: Path,
) -> None:
    import sqlite3

    from omni.jobs.sqlite import DATABASE_FILE

    job = make_job(status=JobStatus.COMPLETED, progress=100, completed_at=1_700_000_100)
    with sqlite3.connect(tmp_path / DATABASE_FILE) as old:  # the table as the first omni wrote it
        old.execute(
            "CREATE TABLE videos (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
            "created_at INTEGER NOT NULL, completed_at INTEGER, status TEXT NOT NULL, "
            "progress INTEGER NOT NULL, model TEXT NOT NULL, prompt TEXT NOT NULL, "
            "seconds TEXT NOT NULL, size TEXT NOT NULL, error_code TEXT, error_message TEXT)"
        )
        old.execute(
            "INSERT INTO videos (id, created_at, completed_at, status, progress, model, prompt, "
            "seconds, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.created_at, job.completed_at, job.status.value, job.progress, job.model,
             job.prompt, job.seconds, job.size),
        )  # fmt: skip
    (tmp_path / artifact_name(job.id)).write_bytes(b"an mp4")

    store = VideoStore(tmp_path)
    try:
        assert store.get(job.id) == job
        queued = make_job()
        store.create(queued)  # the newer columns (input, key, lease, fence) are written to
        claim = store.claim()
        assert claim is not None and claim.job_id == queued.id and claim.fence == 1
    finally:
        store.close()
