"""The SQL under every job store: the videos table's columns, and the statements shared by
the SQLite and the Postgres store, written with `?` placeholders (a store rewrites them for its
driver where it needs to).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from omni.errors import InvalidRequestError
from omni.jobs.artifacts import ArtifactStore
from omni.video_job import FINISHED, UNFINISHED, JobStatus, KeyedJob, VideoJob, is_job_id

SERVER_RESTARTED = "server_restarted"
DEFAULT_LEASE_S = 30.0  # a job whose owner has not renewed it this long is taken back
INPUT_COLUMNS = "params, reference_image, idempotency_key, request_digest"
DROP_INPUT = "params = NULL, reference_image = NULL"  # a finished job never runs again
RELEASE = "worker = NULL, lease_until = NULL"  # back in the queue, for any server to claim
FINISH = "lease_until = NULL"  # a finished job keeps the worker that finished it
QUEUED, IN_PROGRESS = JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value
# The videos table, one column list for every store: (name, kind, constraint), where each store
# maps a kind to its own type. Columns from `params` on came after the first schema: SQLite adds
# them to older databases on open.
TABLE = (
    ("id", "text", "NOT NULL UNIQUE"),
    ("created_at", "bigint", "NOT NULL"),
    ("completed_at", "bigint", ""),
    ("status", "text", "NOT NULL"),
    ("progress", "int", "NOT NULL"),
    ("model", "text", "NOT NULL"),
    ("prompt", "text", "NOT NULL"),
    ("seconds", "text", "NOT NULL"),
    ("size", "text", "NOT NULL"),
    ("error_code", "text", ""),
    ("error_message", "text", ""),
    ("params", "bytes", ""),
    ("reference_image", "bytes", ""),
    ("idempotency_key", "key", ""),
    ("request_digest", "text", ""),
    ("worker", "text", ""),
    ("fence", "bigint", "NOT NULL DEFAULT 0"),
    ("lease_until", "float", ""),
)
FIRST_ADDED_COLUMN = "params"
_NAMES = [name for name, _, _ in TABLE]
# A job's record, in VideoJob's order: the columns of the first schema (omni.video_job)
COLUMNS = ", ".join(_NAMES[: _NAMES.index(FIRST_ADDED_COLUMN)])


def table_columns(types: dict[str, str]) -> dict[str, str]:
    """Each column's definition by name, its kind written as the store's type."""
    return {name: " ".join(filter(None, (name, types[kind], rule))) for name, kind, rule in TABLE}


def create_table(sequence: str, types: dict[str, str]) -> str:
    """CREATE TABLE videos, with `sequence` the store's auto-incrementing key column."""
    body = ",\n    ".join([f"seq {sequence}", *table_columns(types).values()])
    return f"CREATE TABLE IF NOT EXISTS videos (\n    {body}\n)"


NO_INPUT_MESSAGE = (
    "the server restarted before this job finished, and no input was kept to run it again; "
    "submit it again"
)
NOT_RESUMED_MESSAGE = (
    "the server restarted while this job ran, and does not run such jobs again (--no-resume); "
    "submit it again"
)


class JobTable:
    """The videos table, its lock (one statement at a time on one connection) and its clock.

    A subclass connects to its database and runs statements through `_exec`.
    """

    def __init__(
        self,
        artifacts: ArtifactStore,
        retention_s: int | None,
        clock: Callable[[], float],
        resume: bool,
        worker_id: str,
        lease_s: float,
    ) -> None:
        if retention_s is not None and retention_s < 1:
            raise ValueError(f"retention must be at least 1 second, got {retention_s}")
        if not lease_s > 0:
            raise ValueError(f"the lease must be a positive number of seconds, got {lease_s}")
        self.artifacts = artifacts
        self.retention_s = retention_s
        self.resume = resume
        self.worker_id = worker_id
        self.lease_s = lease_s
        self._clock = clock
        self._lock = threading.Lock()

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (the caller holds `_lock`); the cursor."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # Internals -------------------------------------------------------------------------------

    def _lease_end(self) -> float:
        return self._clock() + self.lease_s

    def _holds(self, job_id: str, fence: int) -> bool:
        with self._lock:
            row = self._exec(
                "SELECT 1 FROM videos WHERE id = ? AND fence = ? AND status IN (?, ?)",
                (job_id, fence, *UNFINISHED),
            ).fetchone()
        return row is not None

    @staticmethod
    def _fenced(fence: int | None) -> str:
        return "" if fence is None else " AND fence = ?"

    @staticmethod
    def _fence_args(fence: int | None) -> list[int]:
        return [] if fence is None else [fence]

    def _release_expired(self, cutoff: float) -> int:
        """Fail the unfinished jobs that have no input; queue again (or fail, without resume)
        the running ones whose lease ends before `cutoff`. The caller holds `_lock`."""
        self._fail_unfinished("params IS NULL", (), NO_INPUT_MESSAGE)
        lapsed = "(lease_until IS NULL OR lease_until < ?)"
        failed = 0
        if not self.resume:  # a claimed job that never started is only released
            failed = self._fail_unfinished(
                f"status = ? AND {lapsed}", (IN_PROGRESS, cutoff), NOT_RESUMED_MESSAGE
            )
        return (
            failed
            + self._exec(
                f"UPDATE videos SET status = ?, progress = 0, {RELEASE} WHERE status IN (?, ?) "
                f"AND (worker IS NOT NULL OR status = ?) AND {lapsed}",
                (QUEUED, *UNFINISHED, IN_PROGRESS, cutoff),
            ).rowcount
        )

    def _fail_unfinished(self, condition: str, args: Sequence[Any], message: str) -> int:
        return self._exec(
            "UPDATE videos SET status = ?, error_code = ?, error_message = ?, completed_at = ?, "
            f"{DROP_INPUT}, {FINISH} WHERE status IN (?, ?) AND {condition}",
            (
                JobStatus.FAILED.value,
                SERVER_RESTARTED,
                message,
                int(self._clock()),
                *UNFINISHED,
                *args,
            ),
        ).rowcount

    def _job(self, row: Sequence[Any]) -> VideoJob:
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
            return "1 = 1", []
        cutoff = int(self._clock()) - self.retention_s
        expired = "status IN (?, ?) AND completed_at IS NOT NULL AND completed_at <= ?"
        return f"NOT ({expired})", [*FINISHED, cutoff]

    def _check_id(self, job_id: str) -> None:
        if not is_job_id(job_id):
            raise InvalidRequestError(f"{job_id!r} is not a video id", param="video_id")

    def _cursor(self, after: str) -> tuple[int, int]:
        row = None
        if is_job_id(after):
            row = self._exec("SELECT created_at, seq FROM videos WHERE id = ?", (after,)).fetchone()
        if row is None:
            raise InvalidRequestError(
                f"after: no video job {after!r} (deleted or expired?); list again without "
                "after to start over",
                param="after",
            )
        return tuple(row)

    def _find_key(self, idempotency_key: str) -> KeyedJob | None:
        live, live_args = self._live()
        row = self._exec(
            f"SELECT {COLUMNS}, request_digest FROM videos WHERE idempotency_key = ? AND {live}",
            (idempotency_key, *live_args),
        ).fetchone()
        if row is None:  # an expired job that still holds the key gives it up
            self._exec(
                "UPDATE videos SET idempotency_key = NULL WHERE idempotency_key = ?",
                (idempotency_key,),
            )
            return None
        return KeyedJob(self._job(row[:-1]), row[-1])
