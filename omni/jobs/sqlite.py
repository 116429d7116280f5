"""The default job store: SQLite in the storage directory, beside the files (one server).

One store owns a directory at a time: opening one that another store holds raises
StorageInUseError, because recovery would fail that store's live jobs and sweep its files. Being
the only owner, it takes back every unfinished job when it opens (a restart) and never reaps
while it runs: no other server's lease can run out. The further front ends of one server
(--api-server-count) open it with `owner=False`: no lock and no recovery, and they never claim,
so the owner's jobs stay its own; SQLite serialises their writes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omni.files import hold_directory
from omni.jobs.artifacts import PREVIEW_FILES, ArtifactStore, LocalArtifacts, artifact_name
from omni.jobs.base import JobStore
from omni.jobs.sql import DEFAULT_LEASE_S, FIRST_ADDED_COLUMN, create_table, table_columns
from omni.video_job import JobStatus

DATABASE_FILE = "videos.sqlite3"

# SQLite's types for the kinds of omni.jobs.sql.TABLE (its integers are 64-bit whatever the name)
TYPES = {
    "text": "TEXT",
    "key": "TEXT",
    "int": "INTEGER",
    "bigint": "INTEGER",
    "float": "REAL",
    "bytes": "BLOB",
}
SCHEMA = create_table("INTEGER PRIMARY KEY AUTOINCREMENT", TYPES)
COLUMNS_BY_NAME = table_columns(TYPES)
# Columns newer than the first schema, added to older databases on open.
ADDED_COLUMNS = list(COLUMNS_BY_NAME)[list(COLUMNS_BY_NAME).index(FIRST_ADDED_COLUMN) :]
KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS videos_idempotency_key ON videos (idempotency_key)"


class SqliteJobStore(JobStore):
    """Job records in `directory`/videos.sqlite3; files there too unless `artifacts` is given."""

    def __init__(
        self,
        directory: Path | str,
        retention_s: int | None = None,
        clock: Callable[[], float] = time.time,
        resume: bool = True,
        artifacts: ArtifactStore | None = None,
        worker_id: str = "local",
        lease_s: float = DEFAULT_LEASE_S,
        owner: bool = True,
    ) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        local = LocalArtifacts(self.directory)
        super().__init__(artifacts or local, retention_s, clock, resume, worker_id, lease_s)
        self._local = local
        self._owner = hold_directory(self.directory) if owner else -1
        try:
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
            if owner:
                self._recover()
        except BaseException:
            if owner:
                os.close(self._owner)
            raise

    def _exec(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        if self._owner >= 0:  # closing the descriptor releases the flock
            os.close(self._owner)
            self._owner = -1

    def reap(self) -> int:
        return 0  # the only owner: its own leases are renewed, and a restart took back the rest

    def content_path(self, job_id: str) -> Path:
        """Where a job's MP4 lives in the storage directory (local artifacts)."""
        self._check_id(job_id)
        return self._local.path(artifact_name(job_id))

    def preview_path(self, job_id: str, variant: str) -> Path:
        """Where a preview (thumbnail, spritesheet) of a completed job lives, next to its MP4."""
        self._check_id(job_id)
        if variant not in PREVIEW_FILES:
            raise ValueError(f"unknown preview {variant!r}: one of {', '.join(PREVIEW_FILES)}")
        return self._local.path(artifact_name(job_id, variant))

    def _add_new_columns(self) -> None:
        present = {row[1] for row in self._db.execute("PRAGMA table_info(videos)")}
        for name in ADDED_COLUMNS:
            if name not in present:
                self._db.execute(f"ALTER TABLE videos ADD COLUMN {COLUMNS_BY_NAME[name]}")

    def _recover(self) -> None:
        """Queue again (or fail) what a previous server left unfinished; sweep stray files."""
        with self._lock:
            self._release_expired(float("inf"))  # every lease: its holder has stopped
            completed = {
                row[0]
                for row in self._db.execute(
                    "SELECT id FROM videos WHERE status = ?", (JobStatus.COMPLETED.value,)
                )
            }
        self.artifacts.sweep(completed)
