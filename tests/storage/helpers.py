"""Jobs and clocks for the job store tests, shared with the HTTP tests that seed a store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omni.jobs import JobStore
from omni.jobs.artifacts import artifact_name
from omni.storage import JobInput, JobStatus, VideoJob, new_job_id

INPUT = JobInput(b'{"prompt": "a boat"}', b"png bytes")


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


def content_path(store: JobStore, job_id: str) -> Path:
    """Where a job's MP4 is, for the stores under test (both keep files locally)."""
    return store.artifacts.path(artifact_name(job_id))


def run_to_completion(store: JobStore, job: VideoJob, mp4: bytes = b"mp4 bytes") -> None:
    store.create(job)
    store.mark_progress(job.id, 50)
    assert store.complete(job.id, mp4)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
