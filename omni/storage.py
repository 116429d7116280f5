"""The video job store: job records in SQLite beside the MP4 files, in one storage directory.

The store is the truth; memory holds only the running tasks. Every method is short and
blocking, so the HTTP side calls them through `asyncio.to_thread`.

The store is a durable queue: a job's input (its resolved parameters as JSON and its reference
image) is kept with its record until the job finishes. Restart policy: jobs that were queued stay
queued; jobs that were in progress are queued again, or with `resume=False` marked failed with
the code `server_restarted` (a job that was running when a server crashed may be what crashed
it). Jobs without a kept input (from before inputs were kept) cannot run again and fail so too.

Retention: with `retention_s` set, a finished job (completed or failed) expires that long after
it finished. Its record reports `expires_at`; from then on it is not found or listed, and
`delete_expired` removes record and file. Without it, jobs stay until they are deleted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omni.errors import InvalidRequestError
from omni.files import TEMP_MARKER, StorageInUseError, hold_directory, write_atomically
from omni.limits import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from omni.video_job import (
    FINISHED,
    UNFINISHED,
    JobInput,
    JobPage,
    JobStatus,
    KeyedJob,
    VideoJob,
    is_job_id,
    new_job_id,
)

DATABASE_FILE = "videos.sqlite3"
# A completed job's previews, kept next to its MP4 as `{job_id}{suffix}`.
PREVIEW_FILES = {"thumbnail": ".thumbnail.webp", "spritesheet": ".spritesheet.jpg"}
SERVER_RESTARTED = "server_restarted"

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    status TEXT NOT NULL,
    progress INTEGER NOT NULL,
    model TEXT NOT NULL,
    prompt TEXT NOT NULL,
    seconds TEXT NOT NULL,
    size TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    params BLOB,
    reference_image BLOB,
    idempotency_key TEXT,
    request_digest TEXT
)
"""
ADDED_COLUMNS = {  # columns newer than the first schema, added to older databases on open
    "params": "BLOB",
    "reference_image": "BLOB",
    "idempotency_key": "TEXT",
    "request_digest": "TEXT",
}
KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS videos_idempotency_key ON videos (idempotency_key)"
COLUMNS = (
    "id, created_at, completed_at, status, progress, model, prompt, seconds, size, "
    "error_code, error_message"
)
INPUT_COLUMNS = "params, reference_image, idempotency_key, request_digest"
DROP_INPUT = "params = NULL, reference_image = NULL"  # a finished job never runs again
__all__ = [  # what callers import from here, wherever it is defined
    "DATABASE_FILE",
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


class VideoStore:
    """Job records and their MP4s. Ids that do not match JOB_ID_PATTERN never reach a path.

    One store owns a directory at a time: opening one that another store holds raises
    StorageInUseError, because recovery would fail that store's live jobs and sweep its files.
    """

    def __init__(
        self,
        directory: Path | str,
        retention_s: int | None = None,
        clock: Callable[[], float] = time.time,
        resume: bool = True,
    ) -> None:
        if retention_s is not None and retention_s < 1:
            raise ValueError(f"retention must be at least 1 second, got {retention_s}")
        self.retention_s = retention_s
        self._clock = clock
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._owner = hold_directory(self.directory)
        try:
            self._lock = threading.Lock()
            self._db = sqlite3.connect(
                self.directory / DATABASE_FILE, check_same_thread=False, isolation_level=None
            )
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                # In WAL mode NORMAL loses at most the last commits on power loss, never
                # consistency.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(SCHEMA)
                self._add_new_columns()
                self._db.execute(KEY_INDEX)
            self._recover(resume)
        except BaseException:
            os.close(self._owner)
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
        os.close(self._owner)  # closing the descriptor releases the flock

    # Records ---------------------------------------------------------------------------------

    def create(
        self,
        job: VideoJob,
        job_input: JobInput | None = None,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> KeyedJob:
        """Insert the job; if another job holds `idempotency_key`, insert nothing: that job."""
        self._check_id(job.id)
        values = (
            job.id,
            job.created_at,
            job.completed_at,
            job.status.value,
            job.progress,
            job.model,
            job.prompt,
            job.seconds,
            job.size,
            job.error_code,
            job.error_message,
            None if job_input is None else job_input.params,
            None if job_input is None else job_input.reference_image,
            idempotency_key,
            request_digest,
        )
        with self._lock:
            if idempotency_key is not None:
                held = self._find_key(idempotency_key)
                if held is not None:
                    return held
            self._db.execute(
                f"INSERT INTO videos ({COLUMNS}, {INPUT_COLUMNS}) "
                f"VALUES ({', '.join('?' * len(values))})",
                values,
            )
        return KeyedJob(job, request_digest)

    def find_key(self, idempotency_key: str) -> KeyedJob | None:
        """The live job created with this idempotency key, if there is one."""
        with self._lock:
            return self._find_key(idempotency_key)

    def job_input(self, job_id: str) -> JobInput | None:
        """An unfinished job's input; None once it finished, was deleted, or has none kept."""
        if not is_job_id(job_id):
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT params, reference_image FROM videos "
                "WHERE id = ? AND status IN (?, ?) AND params IS NOT NULL",
                (job_id, *UNFINISHED),
            ).fetchone()
        return None if row is None else JobInput(bytes(row[0]), row[1] and bytes(row[1]))

    def queued_ids(self) -> list[str]:
        """The queued jobs' ids, oldest first: the order they run in."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM videos WHERE status = ? ORDER BY seq", (JobStatus.QUEUED.value,)
            ).fetchall()
        return [row[0] for row in rows]

    def requeue(self, job_id: str) -> None:
        """An unfinished job goes back to queued, with no progress."""
        with self._lock:
            self._db.execute(
                "UPDATE videos SET status = ?, progress = 0 WHERE id = ? AND status IN (?, ?)",
                (JobStatus.QUEUED.value, job_id, *UNFINISHED),
            )

    def get(self, job_id: str) -> VideoJob | None:
        if not is_job_id(job_id):
            return None
        live, live_args = self._live()
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM videos WHERE id = ? AND {live}", (job_id, *live_args)
            ).fetchone()
        return None if row is None else self._job(row)

    def list(
        self, after: str | None = None, limit: int = DEFAULT_LIST_LIMIT, order: str = "desc"
    ) -> JobPage:
        """Jobs by creation time; `after` is the id of the last job of the previous page."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequestError(
                f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}", param="limit"
            )
        if order not in ("asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc, got {order!r}", param="order")
        direction, beyond = ("ASC", ">") if order == "asc" else ("DESC", "<")
        live, args = self._live()
        query = f"SELECT {COLUMNS} FROM videos WHERE {live}"
        with self._lock:
            if after is not None:
                query += f" AND (created_at, seq) {beyond} (?, ?)"
                args += self._cursor(after)
            query += f" ORDER BY created_at {direction}, seq {direction} LIMIT ?"
            rows = self._db.execute(query, (*args, limit + 1)).fetchall()
        jobs = [self._job(row) for row in rows[:limit]]
        return JobPage(jobs, has_more=len(rows) > limit)

    def mark_progress(self, job_id: str, progress: int) -> None:
        """The job runs and is `progress` percent done (clamped to 0-99: 100 means completed)."""
        with self._lock:
            self._db.execute(
                "UPDATE videos SET status = ?, progress = ? WHERE id = ? AND status IN (?, ?)",
                (
                    JobStatus.IN_PROGRESS.value,
                    max(0, min(99, progress)),
                    job_id,
                    *UNFINISHED,
                ),
            )

    def fail(self, job_id: str, code: str, message: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE videos SET status = ?, error_code = ?, error_message = ?, "
                f"completed_at = ?, {DROP_INPUT} WHERE id = ? AND status IN (?, ?)",
                (
                    JobStatus.FAILED.value,
                    code,
                    message,
                    int(self._clock()),
                    job_id,
                    *UNFINISHED,
                ),
            )

    def complete(
        self, job_id: str, mp4: bytes, previews: Mapping[str, bytes] | None = None
    ) -> bool:
        """Write the MP4 and its previews (by variant name) durably, then mark the job
        completed; False if it was deleted meanwhile. Previews go first: a completed job has
        every file it was completed with."""
        for variant, data in (previews or {}).items():
            write_atomically(self.preview_path(job_id, variant), data)
        path = self.content_path(job_id)
        write_atomically(path, mp4)
        with self._lock:
            updated = self._db.execute(
                f"UPDATE videos SET status = ?, progress = 100, completed_at = ?, {DROP_INPUT} "
                "WHERE id = ? AND status IN (?, ?)",
                (
                    JobStatus.COMPLETED.value,
                    int(self._clock()),
                    job_id,
                    *UNFINISHED,
                ),
            ).rowcount
        if not updated:
            self._unlink_files(job_id)
        return bool(updated)

    def delete(self, job_id: str) -> bool:
        """Remove the record, then the file (a file left by a crash is swept on next open)."""
        if not is_job_id(job_id):
            return False
        with self._lock:
            deleted = self._db.execute("DELETE FROM videos WHERE id = ?", (job_id,)).rowcount
        self._unlink_files(job_id)
        return bool(deleted)

    def delete_expired(self) -> int:
        """Remove every expired job's record and file; the number removed."""
        if self.retention_s is None:
            return 0
        cutoff = int(self._clock()) - self.retention_s
        query = "FROM videos WHERE status IN (?, ?) AND completed_at <= ?"
        with self._lock:
            expired = [
                row[0] for row in self._db.execute(f"SELECT id {query}", (*FINISHED, cutoff))
            ]
            self._db.execute(f"DELETE {query}", (*FINISHED, cutoff))
        for job_id in expired:
            self._unlink_files(job_id)
        return len(expired)

    # Files -----------------------------------------------------------------------------------

    def content_path(self, job_id: str) -> Path:
        self._check_id(job_id)
        return self.directory / f"{job_id}.mp4"

    def preview_path(self, job_id: str, variant: str) -> Path:
        """Where a preview (thumbnail, spritesheet) of a completed job lives, next to its MP4."""
        self._check_id(job_id)
        if variant not in PREVIEW_FILES:
            raise ValueError(f"unknown preview {variant!r}: one of {', '.join(PREVIEW_FILES)}")
        return self.directory / f"{job_id}{PREVIEW_FILES[variant]}"

    def _unlink_files(self, job_id: str) -> None:
        self.content_path(job_id).unlink(missing_ok=True)
        for variant in PREVIEW_FILES:
            self.preview_path(job_id, variant).unlink(missing_ok=True)

    # Internals -------------------------------------------------------------------------------

    def _job(self, row: tuple[Any, ...]) -> VideoJob:
        values = dict(zip(COLUMNS.split(", "), row, strict=True))
        finished = values["completed_at"]
        expires_at = None
        if self.retention_s is not None and finished is not None:
            expires_at = finished + self.retention_s
        return VideoJob(
            **{**values, "status": JobStatus(values["status"]), "expires_at": expires_at}
        )

    def _live(self) -> tuple[str, list[Any]]:
        """A WHERE condition that leaves out expired jobs, and its arguments."""
        if self.retention_s is None:
            return "1", []
        cutoff = int(self._clock()) - self.retention_s
        expired = "status IN (?, ?) AND completed_at IS NOT NULL AND completed_at <= ?"
        return f"NOT ({expired})", [*FINISHED, cutoff]

    def _check_id(self, job_id: str) -> None:
        if not is_job_id(job_id):
            raise InvalidRequestError(f"{job_id!r} is not a video id", param="video_id")

    def _cursor(self, after: str) -> tuple[int, int]:
        row = None
        if is_job_id(after):
            row = self._db.execute(
                "SELECT created_at, seq FROM videos WHERE id = ?", (after,)
            ).fetchone()
        if row is None:
            raise InvalidRequestError(
                f"after: no video job {after!r} (deleted or expired?); list again without "
                "after to start over",
                param="after",
            )
        return row

    def _find_key(self, idempotency_key: str) -> KeyedJob | None:
        live, live_args = self._live()
        row = self._db.execute(
            f"SELECT {COLUMNS}, request_digest FROM videos WHERE idempotency_key = ? AND {live}",
            (idempotency_key, *live_args),
        ).fetchone()
        if row is None:  # an expired job that still holds the key gives it up
            self._db.execute(
                "UPDATE videos SET idempotency_key = NULL WHERE idempotency_key = ?",
                (idempotency_key,),
            )
            return None
        return KeyedJob(self._job(row[:-1]), row[-1])

    def _fail_unfinished(self, condition: str, message: str) -> None:
        self._db.execute(
            "UPDATE videos SET status = ?, error_code = ?, error_message = ?, completed_at = ?, "
            f"{DROP_INPUT} WHERE status IN (?, ?) AND {condition}",
            (JobStatus.FAILED.value, SERVER_RESTARTED, message, int(self._clock()), *UNFINISHED),
        )

    def _add_new_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(videos)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in present:
                self._db.execute(f"ALTER TABLE videos ADD COLUMN {name} {kind}")

    def _recover(self, resume: bool) -> None:
        """Queue again (or fail) what a previous server left unfinished; sweep stray files."""
        with self._lock:
            self._fail_unfinished(
                "params IS NULL",
                "the server restarted before this job finished, and no input was kept to run it "
                "again; submit it again",
            )
            if resume:
                self._db.execute(
                    "UPDATE videos SET status = ?, progress = 0 WHERE status = ?",
                    (JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value),
                )
            else:
                self._fail_unfinished(
                    f"status = '{JobStatus.IN_PROGRESS.value}'",
                    "the server restarted while this job ran, and does not run such jobs again "
                    "(--no-resume); submit it again",
                )
            completed = {
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM videos WHERE status = ?", (JobStatus.COMPLETED.value,)
                )
            }
        for path in self.directory.glob("*video_*"):
            stem = path.name.split(".", 1)[0]
            if TEMP_MARKER in path.name or (is_job_id(stem) and stem not in completed):
                path.unlink(missing_ok=True)
