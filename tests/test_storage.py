from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omni.errors import InvalidRequestError
from omni.jobs import JobStore
from omni.jobs.artifacts import artifact_name
from omni.storage import (
    SERVER_RESTARTED,
    JobStatus,
    StorageInUseError,
    VideoJob,
    VideoStore,
    is_job_id,
    new_job_id,
    write_atomically,
)


def make_job(created_at: int = 1_700_000_000, **overrides: Any) -> VideoJob:
    values: dict[str, Any] = dict(
        id=new_job_id(),
        created_at=created_at,
        status=JobStatus.QUEUED,
        progress=0,
        model="omni-tiny-video",
        prompt="a boat on a lake",
        seconds="1.125",
        size="32x32",
    )
    return VideoJob(**{**values, **overrides})


@pytest.fixture
def store(open_store: Callable[..., JobStore]) -> JobStore:
    """The job store under test: SQLite, then Postgres (files in a local directory)."""
    return open_store()


def content_path(store: JobStore, job_id: str) -> Path:
    """Where a job's MP4 is, for the stores under test (both keep files locally)."""
    return store.artifacts.path(artifact_name(job_id))


def run_to_completion(store: JobStore, job: VideoJob, mp4: bytes = b"mp4 bytes") -> None:
    store.create(job)
    store.mark_progress(job.id, 50)
    assert store.complete(job.id, mp4)


def test_a_job_moves_from_queued_through_progress_to_completed(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    assert store.get(job.id) == job
    store.mark_progress(job.id, 40)
    running = store.get(job.id)
    assert (running.status, running.progress) == (JobStatus.IN_PROGRESS, 40)
    assert store.complete(job.id, b"frames")
    done = store.get(job.id)
    assert (done.status, done.progress) == (JobStatus.COMPLETED, 100)
    assert done.completed_at is not None
    assert content_path(store, job.id).read_bytes() == b"frames"


def test_a_failed_job_keeps_its_error(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.fail(job.id, "generation_failed", "the batch ran out of memory")
    record = store.get(job.id).to_json()
    assert record["status"] == "failed"
    assert record["error"] == {
        "code": "generation_failed",
        "message": "the batch ran out of memory",
    }


def test_records_carry_every_field_of_the_openai_video_object(store: JobStore) -> None:
    from openai.types import Video
    from openai.types.video_create_error import VideoCreateError

    job = make_job()
    store.create(job)
    store.fail(job.id, "generation_failed", "out of memory")
    record = store.get(job.id).to_json()
    # The SDK parses responses leniently (sizes are not limited to its Literal), but every
    # required field must be present and named as it expects.
    assert set(record) == set(Video.model_fields)
    required_error_fields = {n for n, f in VideoCreateError.model_fields.items() if f.is_required()}
    assert required_error_fields <= set(record["error"])


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


@pytest.mark.parametrize(
    "job_id",
    [
        "../videos.sqlite3",
        "video_../../etc/passwd",
        "video_" + "0" * 31,
        "video_" + "A" * 32,
        "video_" + "0" * 32 + "\n",
        "video_" + "0" * 32 + "/../x",
        "/tmp/video_" + "0" * 32,
        "",
    ],
)
def test_ids_that_are_not_ours_never_reach_a_path(store: JobStore, job_id: str) -> None:
    assert not is_job_id(job_id)
    assert store.get(job_id) is None
    assert store.delete(job_id) is False
    with pytest.raises(InvalidRequestError):
        store.open_artifact(job_id)
    with pytest.raises(InvalidRequestError):
        store.create(make_job(id=job_id))


def test_new_ids_are_random_and_valid() -> None:
    ids = {new_job_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_job_id(job_id) for job_id in ids)


def test_content_paths_stay_inside_the_storage_directory(store: JobStore) -> None:
    path = content_path(store, new_job_id())
    assert path.parent == store.artifacts.directory


def collect_pages(store: JobStore, order: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after = None
    while True:
        page = store.list(after=after, limit=limit, order=order)
        pages.append([job.id for job in page.jobs])
        if not page.has_more:
            return pages
        after = page.jobs[-1].id
        assert len(pages) < 10


def test_listing_paginates_in_creation_order(store: JobStore) -> None:
    # Two jobs share a second: creation order still breaks the tie.
    jobs = [make_job(created_at=t) for t in (100, 100, 101, 102, 103)]
    for job in jobs:
        store.create(job)
    ids = [job.id for job in jobs]
    assert collect_pages(store, "asc", 2) == [ids[0:2], ids[2:4], ids[4:]]
    newest_first = ids[::-1]
    assert collect_pages(store, "desc", 2) == [
        newest_first[0:2],
        newest_first[2:4],
        newest_first[4:],
    ]
    assert collect_pages(store, "desc", 5) == [newest_first]
    assert store.list(limit=100).has_more is False


def test_listing_an_empty_store_gives_an_empty_page(store: JobStore) -> None:
    page = store.list()
    assert (page.jobs, page.has_more) == ([], False)


@pytest.mark.parametrize(
    "kwargs",
    [{"limit": 0}, {"limit": 101}, {"order": "sideways"}, {"after": new_job_id()}, {"after": "x"}],
)
def test_bad_listing_arguments_are_refused(store: JobStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError):
        store.list(**kwargs)


def test_delete_removes_record_and_file(store: JobStore) -> None:
    job = make_job()
    run_to_completion(store, job)
    assert store.delete(job.id)
    assert store.get(job.id) is None
    assert not content_path(store, job.id).exists()
    assert store.delete(job.id) is False


def test_a_job_deleted_while_running_leaves_no_file_when_it_completes(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.mark_progress(job.id, 10)
    store.delete(job.id)
    assert store.complete(job.id, b"late") is False
    assert store.get(job.id) is None
    assert list(store.artifacts.directory.glob("*.mp4*")) == []


def test_finished_jobs_take_no_more_progress_or_failures(store: JobStore) -> None:
    job = make_job()
    run_to_completion(store, job)
    store.mark_progress(job.id, 10)
    store.fail(job.id, "late", "too late")
    record = store.get(job.id)
    assert (record.status, record.progress, record.error_code) == (JobStatus.COMPLETED, 100, None)


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


def test_progress_stops_short_of_100_until_the_file_is_written(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.mark_progress(job.id, 100)
    assert store.get(job.id).progress == 99
    assert not content_path(store, job.id).exists()
    assert store.complete(job.id, b"done")
    assert store.get(job.id).progress == 100


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


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
