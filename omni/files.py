"""Files the store relies on: a directory lock that a crash releases, and atomic writes."""

from __future__ import annotations

import fcntl
import os
import secrets
from contextlib import suppress
from pathlib import Path

LOCK_FILE = "server.lock"
TEMP_MARKER = ".tmp-"


class StorageInUseError(RuntimeError):
    """Another open store (another server) holds the storage directory."""


def hold_directory(directory: Path) -> int:
    """An exclusive flock on the directory's lock file, as an open descriptor to keep.

    The kernel drops the lock when its holder exits, however it exits, so a crash never leaves
    the directory locked. The holder's pid in the file is for the error message only.
    """
    path = directory / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise StorageInUseError(
            f"storage path {directory} is in use by another omni server (pid {holder}); "
            "give each server its own --storage-path"
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync it, rename, fsync the directory.

    A reader (or a crash) sees either no file or the whole file, never a part of one.
    """
    temp = path.with_name(f".{path.name}{TEMP_MARKER}{secrets.token_hex(4)}")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            temp.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
