from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.servers import ServerProcess

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
