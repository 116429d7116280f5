"""A job's life in each store: progress, completion, failure and deletion."""

from __future__ import annotations

from omni.jobs import JobStore
from omni.storage import JobStatus
from tests.storage.helpers import content_path, make_job, run_to_completion


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


def test_progress_stops_short_of_100_until_the_file_is_written(store: JobStore) -> None:
    job = make_job()
    store.create(job)
    store.mark_progress(job.id, 100)
    assert store.get(job.id).progress == 99
    assert not content_path(store, job.id).exists()
    assert store.complete(job.id, b"done")
    assert store.get(job.id).progress == 100


def test_finished_jobs_take_no_more_progress_or_failures(store: JobStore) -> None:
    job = make_job()
    run_to_completion(store, job)
    store.mark_progress(job.id, 10)
    store.fail(job.id, "late", "too late")
    record = store.get(job.id)
    assert (record.status, record.progress, record.error_code) == (JobStatus.COMPLETED, 100, None)


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
