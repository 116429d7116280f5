"""The job store as a queue: servers claim queued jobs, keep them by lease, write with a fence.

A server `claim`s the oldest unclaimed queued job when its engine has room: the job is owned by
that server's worker id until its lease runs out (it shows as queued until its first step), and
its fence token goes up by one. The owner renews the lease while the job runs and passes the
fence with every progress, failure and completion write; a write whose fence is no longer the
job's (its lease ran out and another server claimed it) changes nothing. `reap` takes back jobs
whose lease ran out: queued again, or with `resume=False` failed with the code
`server_restarted` (a job that was running when a server crashed may be what crashed it). Jobs
without a kept input (from before inputs were kept) cannot run again and fail so too.
"""

from __future__ import annotations

from dataclasses import dataclass

from omni.jobs.sql import QUEUED, RELEASE, JobTable
from omni.video_job import UNFINISHED


@dataclass(frozen=True, slots=True)
class Claim:
    """A job this worker now runs, and the fence token its writes must carry."""

    job_id: str
    fence: int


class JobQueue(JobTable):
    """Claims on the videos table; `lock_queued` is what makes a claim skip the rows another
    server is claiming (Postgres: FOR UPDATE SKIP LOCKED)."""

    lock_queued = ""

    def queued_ids(self) -> list[str]:
        """The queued jobs' ids, oldest first: the order they are claimed in."""
        with self._lock:
            rows = self._exec(
                "SELECT id FROM videos WHERE status = ? ORDER BY seq", (QUEUED,)
            ).fetchall()
        return [row[0] for row in rows]

    def count_queued(self) -> int:
        """The queued jobs no server has claimed yet."""
        with self._lock:
            row = self._exec(
                "SELECT COUNT(*) FROM videos WHERE status = ? AND worker IS NULL", (QUEUED,)
            ).fetchone()
        return row[0]

    def claim(self) -> Claim | None:
        """Take the oldest queued job for this worker, with a fresh lease; None if none waits."""
        with self._lock:
            row = self._exec(
                "UPDATE videos SET worker = ?, fence = fence + 1, lease_until = ? "
                "WHERE status = ? AND worker IS NULL AND id = (SELECT id FROM videos "
                f"WHERE status = ? AND worker IS NULL ORDER BY seq LIMIT 1{self.lock_queued}) "
                "RETURNING id, fence",
                (self.worker_id, self._lease_end(), QUEUED, QUEUED),
            ).fetchone()
        return None if row is None else Claim(row[0], row[1])

    def renew(self, claim: Claim) -> bool:
        """Extend the lease; False if the job is no longer this claim's (taken, finished,
        deleted)."""
        with self._lock:
            return bool(
                self._exec(
                    "UPDATE videos SET lease_until = ? WHERE id = ? AND fence = ? "
                    "AND status IN (?, ?)",
                    (self._lease_end(), claim.job_id, claim.fence, *UNFINISHED),
                ).rowcount
            )

    def requeue(self, job_id: str, fence: int | None = None) -> None:
        """An unfinished job goes back to queued, with no progress."""
        with self._lock:
            self._exec(
                f"UPDATE videos SET status = ?, progress = 0, {RELEASE} "
                f"WHERE id = ? AND status IN (?, ?){self._fenced(fence)}",
                (QUEUED, job_id, *UNFINISHED, *self._fence_args(fence)),
            )

    def reap(self) -> int:
        """Take back the jobs whose lease ran out (queued again, or failed without resume)."""
        with self._lock:
            return self._release_expired(self._clock())
