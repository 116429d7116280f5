from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.servers import ServerProcess, ServerThread, server_thread, video_config

SERVED_NAME = "tiny-flux"
MAX_BODY_BYTES = 65536


@pytest.fixture(scope="session")
def server(
    tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """`python -m omni.serve` on the tiny FLUX model, shared by every test that only reads."""
    log_path = tmp_path_factory.mktemp("serve") / "server.log"
    args = [
        "--model",
        str(tiny_flux_dir),
        "--served-model-name",
        SERVED_NAME,
        "--max-body-bytes",
        str(MAX_BODY_BYTES),
        "--storage-path",
        str(tmp_path_factory.mktemp("storage")),
    ]
    process = ServerProcess(args, log_path)
    try:
        process.wait_healthy()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def url(server: ServerProcess) -> str:
    return server.url


@pytest.fixture(scope="module")
def video_server(
    tiny_wan_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A tiny Wan server per test module, each with storage of its own."""
    storage = tmp_path_factory.mktemp("video-storage")
    with server_thread(video_config(tiny_wan_dir, storage)) as server:
        yield server


@pytest.fixture(scope="module")
def video_url(video_server: ServerThread) -> str:
    return video_server.url
