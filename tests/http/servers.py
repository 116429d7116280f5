"""Real servers on free loopback ports: a `python -m omni.serve` process, or one in a thread."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from omni.config import EngineConfig
from omni.http import RunningServer, ServerConfig, start_server

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll `check` until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def is_healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def stats(url: str, **headers: str) -> dict[str, Any]:
    response = requests.get(f"{url}/v1/stats", headers=headers, timeout=10)
    response.raise_for_status()
    return response.json()


class ServerProcess:
    """`python -m omni.serve ARGS` with its console captured in `log_path`."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        command = [sys.executable, "-m", "omni.serve", "--port", str(self.port), *args]
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"omni.serve exited:\n{self.log_path.read_text()}")
            return is_healthy(self.url)

        wait_until(healthy, timeout, "omni.serve to become healthy", interval=0.2)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


class ServerThread:
    """`start_server` on an event loop of its own, so tests stay plain functions."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: RunningServer = self.call(start_server(config))
        self.url = self.server.url

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@contextmanager
def server_thread(config: ServerConfig, wait_healthy: bool = True) -> Iterator[ServerThread]:
    server = ServerThread(config)
    try:
        if wait_healthy:
            wait_until(lambda: is_healthy(server.url), START_TIMEOUT_S, "the engine to load")
        yield server
    finally:
        server.stop()


def open_request(url: str, path: str, body: bytes) -> socket.socket:
    """Send a POST and return the open socket without reading: closing it is a disconnect."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


VIDEO_SERVED_NAME = "tiny-wan"


def video_config(model: Path, storage: Path) -> ServerConfig:
    # No start-up profile: a video forward takes seconds on a CPU, and every test server pays it.
    engine = EngineConfig(model=str(model), served_model_name=VIDEO_SERVED_NAME, profile_seconds=0)
    return ServerConfig(engine=engine, port=0, storage_path=storage)
