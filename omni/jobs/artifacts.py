"""The artifact store: where a completed job's MP4 and previews live, by name.

One interface, two implementations: a local directory (the default, `LocalArtifacts`) and an
S3-compatible bucket (`omni.jobs.s3.S3Artifacts`). Artifacts are written once, whole, and never
change; a reader sees either the whole artifact or none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Protocol

from omni.files import TEMP_MARKER, write_atomically
from omni.video_job import is_job_id

# A completed job's files: the MP4 as `{job_id}.mp4`, its previews as `{job_id}{suffix}`.
VIDEO_SUFFIX = ".mp4"
PREVIEW_FILES = {"thumbnail": ".thumbnail.webp", "spritesheet": ".spritesheet.jpg"}
VARIANT_SUFFIXES = {"video": VIDEO_SUFFIX, **PREVIEW_FILES}


def artifact_name(job_id: str, variant: str = "video") -> str:
    """The name of a job's MP4 ("video") or preview; the caller has checked the id."""
    if variant not in VARIANT_SUFFIXES:
        raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANT_SUFFIXES)}")
    return f"{job_id}{VARIANT_SUFFIXES[variant]}"


class ArtifactReader(Protocol):
    """An open artifact: its size, and its bytes from any offset on."""

    size: int

    def seek(self, offset: int) -> object: ...

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class ArtifactStore(Protocol):
    def put(self, name: str, data: bytes) -> None:
        """Store `data` durably under `name`, replacing whatever was there, atomically."""

    def open(self, name: str) -> ArtifactReader:
        """The artifact, open for reading; FileNotFoundError if there is none."""

    def delete(self, name: str) -> None:
        """Remove the artifact; nothing if there is none."""

    def presigned_url(self, name: str, expires_s: int) -> str | None:
        """A URL a client may GET the artifact from for `expires_s`; None if the store has none."""

    def sweep(self, keep: set[str]) -> None:
        """Remove partial writes and the files of jobs not in `keep` (the completed ones).

        Only a store's single owner may call it: on a shared store it would take files of jobs
        that other servers are completing."""


class FileReader:
    """A local file as an ArtifactReader: read from the descriptor opened first, so a file
    deleted while it is sent still streams."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.size = os.fstat(file.fileno()).st_size

    def seek(self, offset: int) -> object:
        return self._file.seek(offset)

    def read(self, size: int) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        self._file.close()


class LocalArtifacts:
    """Artifacts as files in one directory, written atomically and fsynced."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.directory / name

    def put(self, name: str, data: bytes) -> None:
        write_atomically(self.path(name), data)

    def open(self, name: str) -> ArtifactReader:
        return FileReader(self.path(name).open("rb"))

    def delete(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def presigned_url(self, name: str, expires_s: int) -> str | None:
        return None

    def sweep(self, keep: set[str]) -> None:
        for path in self.directory.glob("*video_*"):
            stem = path.name.split(".", 1)[0]
            if TEMP_MARKER in path.name or (is_job_id(stem) and stem not in keep):
                path.unlink(missing_ok=True)
