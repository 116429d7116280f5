"""Where video jobs live: a job store (records, the durable queue) and an artifact store (files).

Job stores: SQLite in the storage directory (the default, one server) or Postgres
(`postgresql://...`, shared by servers). Artifact stores: the storage directory (the default) or
an S3-compatible bucket (`s3://bucket/prefix`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from omni.jobs.artifacts import ArtifactStore, LocalArtifacts
from omni.jobs.base import JobStore
from omni.jobs.queue import Claim
from omni.jobs.sql import DEFAULT_LEASE_S, SERVER_RESTARTED
from omni.jobs.sqlite import DATABASE_FILE, SqliteJobStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
__all__ = [
    "DATABASE_FILE",
    "DEFAULT_LEASE_S",
    "SERVER_RESTARTED",
    "ArtifactStore",
    "Claim",
    "JobStore",
    "SqliteJobStore",
    "check_store_urls",
    "open_job_store",
]


def check_store_urls(job_store: str | None, artifact_store: str | None) -> None:
    """ValueError naming the flag, for a store URL of a kind there is no store for."""
    if job_store is not None and not job_store.startswith(POSTGRES_SCHEMES):
        raise ValueError(f"--job-store must be a postgresql:// URL, got {job_store!r}")
    if artifact_store is not None:
        from omni.jobs.s3 import parse_s3_url

        try:
            parse_s3_url(artifact_store)
        except ValueError as exc:
            raise ValueError(f"--artifact-store: {exc}") from None


def default_worker_id() -> str:
    """This server, as job records name the one that ran a job: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def open_job_store(
    directory: Path,
    retention_s: int | None = None,
    resume: bool = True,
    job_store: str | None = None,
    artifact_store: str | None = None,
    s3_endpoint_url: str | None = None,
    lease_s: float = DEFAULT_LEASE_S,
    clock: Callable[[], float] = time.time,
    owner: bool = True,
) -> JobStore:
    """The store the flags name; with none, SQLite and files in `directory` (as always).

    `owner=False`: a further front end of the server that owns the SQLite store (see there)."""
    check_store_urls(job_store, artifact_store)
    artifacts: ArtifactStore | None = None
    if artifact_store is not None:
        from omni.jobs.s3 import S3Artifacts

        artifacts = S3Artifacts(artifact_store, s3_endpoint_url)
    worker = default_worker_id()
    if job_store is None:
        return SqliteJobStore(
            directory, retention_s, clock, resume, artifacts, worker, lease_s, owner
        )
    from omni.jobs.postgres import PostgresJobStore

    artifacts = artifacts or LocalArtifacts(directory)
    return PostgresJobStore(job_store, artifacts, retention_s, clock, resume, worker, lease_s)
