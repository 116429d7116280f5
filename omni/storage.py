"""The default video job store, by the names callers have always imported from here.

The stores live in omni.jobs: this is SQLite + files in one directory (`VideoStore`).
"""

from __future__ import annotations

from omni.files import StorageInUseError, write_atomically
from omni.jobs.artifacts import PREVIEW_FILES
from omni.jobs.sql import SERVER_RESTARTED
from omni.jobs.sqlite import DATABASE_FILE
from omni.jobs.sqlite import SqliteJobStore as VideoStore
from omni.video_job import JobInput, JobPage, JobStatus, KeyedJob, VideoJob, is_job_id, new_job_id

__all__ = [
    "DATABASE_FILE",
    "PREVIEW_FILES",
    "SERVER_RESTARTED",
    "JobInput",
    "JobPage",
    "JobStatus",
    "KeyedJob",
    "StorageInUseError",
    "VideoJob",
    "VideoStore",
    "is_job_id",
    "new_job_id",
    "write_atomically",
]
