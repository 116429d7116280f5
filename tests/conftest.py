from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

T = TypeVar("T")


def run(coroutine: Awaitable[T], timeout: float = 120.0) -> T:
    """Run a coroutine to completion; tests stay plain functions."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(scope="session")
def tiny_flux_kontext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-kontext", kontext=True)


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


@pytest.fixture(scope="session")
def tiny_wan22_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text-to-video with two experts (Wan2.2 A14B layout)."""
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan22", two_experts=True)


@pytest.fixture(scope="session")
def tiny_wan_i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image-to-video with two experts (Wan2.2 I2V A14B layout)."""
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(
        tmp_path_factory.mktemp("models") / "tiny-wan-i2v", image_to_video=True, two_experts=True
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for the session (skips where its binaries are missing)."""
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server for the session (skips where moto is missing)."""
    from tests.services import s3_server

    with s3_server() as url:
        yield url


STORE_KINDS = ["sqlite", "postgres"]


@pytest.fixture(params=STORE_KINDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Opens the job store under test (each kind in turn) on one place: opening it again is a
    restart, or another server on the same store. Files go to tmp_path/videos either way."""
    from omni.jobs import SqliteJobStore
    from omni.jobs.artifacts import LocalArtifacts

    directory = tmp_path / "videos"
    opened: list[Any] = []
    database = None
    if request.param == "postgres":
        from tests.services import new_database

        database = new_database(request.getfixturevalue("postgres_server_url"))

    def opener(**kwargs: Any) -> Any:
        if database is None:
            store = SqliteJobStore(directory, **kwargs)
        else:
            from omni.jobs.postgres import PostgresJobStore

            store = PostgresJobStore(database, LocalArtifacts(directory), **kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        with suppress(Exception):  # the test closed it
            store.close()
