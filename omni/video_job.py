"""A video job's record, as the store keeps it and the API shows it, and its kept input."""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from typing import Any

JOB_ID_PATTERN = re.compile(r"video_[0-9a-f]{32}")


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class VideoJob:
    id: str
    created_at: int
    status: JobStatus
    progress: int
    model: str
    prompt: str
    seconds: str
    size: str
    completed_at: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    expires_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as the OpenAI Video object."""
        error = None
        if self.error_code is not None:
            error = {"code": self.error_code, "message": self.error_message or ""}
        return {
            "id": self.id,
            "object": "video",
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "status": self.status.value,
            "progress": self.progress,
            "model": self.model,
            "prompt": self.prompt,
            "seconds": self.seconds,
            "size": self.size,
            "remixed_from_video_id": None,
            "error": error,
        }


@dataclass(frozen=True, slots=True)
class JobInput:
    """What a job needs to run again: its parameters as JSON, and its reference image if any."""

    params: bytes
    reference_image: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyedJob:
    """The job that holds an idempotency key, and the digest of the request it was made from."""

    job: VideoJob
    request_digest: str | None


@dataclass(frozen=True, slots=True)
class JobPage:
    jobs: list[VideoJob]
    has_more: bool


def new_job_id() -> str:
    return f"video_{secrets.token_hex(16)}"


def is_job_id(value: str) -> bool:
    return JOB_ID_PATTERN.fullmatch(value) is not None


FINISHED = (JobStatus.COMPLETED.value, JobStatus.FAILED.value)
UNFINISHED = (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value)
