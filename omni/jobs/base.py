"""The job-store interface, and its SQL, shared by the SQLite and the Postgres store.

The store is the truth; memory holds only the running tasks. Every method is short and
blocking, so the HTTP side calls them through `asyncio.to_thread`.

The store is a durable queue: a job's input (its resolved parameters as JSON and its reference
image) is kept with its record until the job finishes. Claims, leases and fences are
the queue's (`omni.jobs.queue`).

Retention: with `retention_s` set, a finished job (completed or failed) expires that long after
it finished. Its record reports `expires_at`; from then on it is not found or listed, and
`delete_expired` removes record and files. Without it, jobs stay until they are deleted.
"""

from __future__ import annotations

from collections.abc import Mapping

from omni.errors import InvalidRequestError
from omni.jobs.artifacts import VARIANT_SUFFIXES, ArtifactReader, artifact_name
from omni.jobs.queue import JobQueue
from omni.jobs.sql import (
    COLUMNS,
    DROP_INPUT,
    FINISH,
    IN_PROGRESS,
    INPUT_COLUMNS,
)
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
)


class JobStore(JobQueue):
    """The job-store interface: job records and their files (an ArtifactStore). Ids that do
    not match JOB_ID_PATTERN never reach an artifact name.

    SqliteJobStore and PostgresJobStore implement it.
    """

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
            inserted = self._exec(
                f"INSERT INTO videos ({COLUMNS}, {INPUT_COLUMNS}) "
                f"VALUES ({', '.join('?' * len(values))}) ON CONFLICT DO NOTHING",
                values,
            ).rowcount
            if not inserted and idempotency_key is not None:  # another server got the key first
                held = self._find_key(idempotency_key)
                if held is not None:
                    return held
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
            row = self._exec(
                "SELECT params, reference_image FROM videos "
                "WHERE id = ? AND status IN (?, ?) AND params IS NOT NULL",
                (job_id, *UNFINISHED),
            ).fetchone()
        return None if row is None else JobInput(bytes(row[0]), row[1] and bytes(row[1]))

    def get(self, job_id: str) -> VideoJob | None:
        if not is_job_id(job_id):
            return None
        live, live_args = self._live()
        with self._lock:
            row = self._exec(
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
            rows = self._exec(query, (*args, limit + 1)).fetchall()
        jobs = [self._job(row) for row in rows[:limit]]
        return JobPage(jobs, has_more=len(rows) > limit)

    def mark_progress(self, job_id: str, progress: int, fence: int | None = None) -> bool:
        """The job runs and is `progress` percent done (clamped to 0-99: 100 means completed);
        with `fence`, it also renews the lease. False if the write was refused."""
        with self._lock:
            return bool(
                self._exec(
                    "UPDATE videos SET status = ?, progress = ?"
                    f"{'' if fence is None else ', lease_until = ?'} "
                    f"WHERE id = ? AND status IN (?, ?){self._fenced(fence)}",
                    (
                        IN_PROGRESS,
                        max(0, min(99, progress)),
                        *([] if fence is None else [self._lease_end()]),
                        job_id,
                        *UNFINISHED,
                        *self._fence_args(fence),
                    ),
                ).rowcount
            )

    def fail(self, job_id: str, code: str, message: str, fence: int | None = None) -> bool:
        with self._lock:
            return bool(
                self._exec(
                    "UPDATE videos SET status = ?, error_code = ?, error_message = ?, "
                    f"completed_at = ?, {DROP_INPUT}, {FINISH} "
                    f"WHERE id = ? AND status IN (?, ?){self._fenced(fence)}",
                    (
                        JobStatus.FAILED.value,
                        code,
                        message,
                        int(self._clock()),
                        job_id,
                        *UNFINISHED,
                        *self._fence_args(fence),
                    ),
                ).rowcount
            )

    def complete(
        self,
        job_id: str,
        mp4: bytes,
        previews: Mapping[str, bytes] | None = None,
        fence: int | None = None,
    ) -> bool:
        """Write the MP4 and its previews (by variant name) durably, then mark the job
        completed; False if it was deleted meanwhile, or (with `fence`) is no longer this
        claim's. Previews go first: a completed job has every file it was completed with."""
        self._check_id(job_id)
        if fence is not None and not self._holds(job_id, fence):
            return False  # another server runs it now: leave its files alone
        for variant, data in (previews or {}).items():
            self.artifacts.put(artifact_name(job_id, variant), data)
        self.artifacts.put(artifact_name(job_id), mp4)
        with self._lock:
            updated = self._exec(
                f"UPDATE videos SET status = ?, progress = 100, completed_at = ?, {DROP_INPUT}, "
                f"{FINISH} WHERE id = ? AND status IN (?, ?){self._fenced(fence)}",
                (
                    JobStatus.COMPLETED.value,
                    int(self._clock()),
                    job_id,
                    *UNFINISHED,
                    *self._fence_args(fence),
                ),
            ).rowcount
            if not updated:
                row = self._exec("SELECT status FROM videos WHERE id = ?", (job_id,)).fetchone()
        if not updated and (row is None or row[0] != JobStatus.COMPLETED.value):
            self._delete_artifacts(job_id)  # deleted or failed meanwhile: nothing owns them
        return bool(updated)

    def delete(self, job_id: str) -> bool:
        """Remove the record, then the files (a file left by a crash is swept on next open)."""
        if not is_job_id(job_id):
            return False
        with self._lock:
            deleted = self._exec("DELETE FROM videos WHERE id = ?", (job_id,)).rowcount
        self._delete_artifacts(job_id)
        return bool(deleted)

    def delete_expired(self) -> int:
        """Remove every expired job's record and files; the number removed."""
        if self.retention_s is None:
            return 0
        cutoff = int(self._clock()) - self.retention_s
        with self._lock:
            expired = self._exec(
                "DELETE FROM videos WHERE status IN (?, ?) AND completed_at <= ? RETURNING id",
                (*FINISHED, cutoff),
            ).fetchall()
        for (job_id,) in expired:
            self._delete_artifacts(job_id)
        return len(expired)

    # Files -----------------------------------------------------------------------------------

    def open_artifact(self, job_id: str, variant: str = "video") -> ArtifactReader:
        """A job's MP4 ("video") or preview, open; FileNotFoundError if it has none."""
        self._check_id(job_id)
        return self.artifacts.open(artifact_name(job_id, variant))

    def artifact_url(self, job_id: str, variant: str, expires_s: int) -> str | None:
        self._check_id(job_id)
        return self.artifacts.presigned_url(artifact_name(job_id, variant), expires_s)

    def _delete_artifacts(self, job_id: str) -> None:
        for variant in VARIANT_SUFFIXES:
            self.artifacts.delete(artifact_name(job_id, variant))
