"""The shared job store: Postgres (psycopg 3), for several servers on one queue.

Servers claim queued jobs with `SELECT ... FOR UPDATE SKIP LOCKED`, so two never take one job;
each renews its jobs' leases while they run, and every server reaps: a job whose lease ran out
(its server died or hung) is queued again for whichever server has room next.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from omni.jobs.artifacts import ArtifactStore
from omni.jobs.base import JobStore
from omni.jobs.sql import DEFAULT_LEASE_S, create_table

SCHEMA_LOCK = 0x6F6D6E69  # a pg_advisory_xact_lock key: servers starting at once create once
# Postgres's types for the kinds of omni.jobs.sql.TABLE; an idempotency key is unique here
TYPES = {
    "text": "TEXT",
    "key": "TEXT UNIQUE",
    "int": "INTEGER",
    "bigint": "BIGINT",
    "float": "DOUBLE PRECISION",
    "bytes": "BYTEA",
}
SCHEMA = (
    create_table("BIGSERIAL PRIMARY KEY", TYPES),
    "CREATE INDEX IF NOT EXISTS videos_status_seq ON videos (status, seq)",
)


class PostgresJobStore(JobStore):
    lock_queued = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        artifacts: ArtifactStore,
        retention_s: int | None = None,
        clock: Callable[[], float] = time.time,
        resume: bool = True,
        worker_id: str = "local",
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        import psycopg  # an optional dependency: pip install -e ".[cluster]"

        super().__init__(artifacts, retention_s, clock, resume, worker_id, lease_s)
        self._connect = lambda: psycopg.connect(url, autocommit=True)
        self._db = self._connect()
        try:
            with self._lock, self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                for statement in SCHEMA:
                    self._db.execute(statement)
            self.reap()  # what a server that stopped left behind, once its lease ran out
        except BaseException:
            self._db.close()
            raise

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> Any:
        import psycopg

        if self._db.closed:  # the last statement lost the connection: connect again
            self._db = self._connect()
        try:
            return self._db.execute(sql.replace("?", "%s"), args)
        except psycopg.OperationalError:
            # The database restarted or the network dropped. psycopg does not always mark the
            # connection broken (a send that fails half-way leaves it "active"), so drop it
            # here; every statement is its own transaction, and the caller may retry.
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
