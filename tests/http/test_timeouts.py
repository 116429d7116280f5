"""Slow clients are disconnected after their timeout while others are served (issue 11: 8)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from omni.http.videos import VIDEO_JOBS
from omni.storage import JobStatus
from tests.http.raw import address, assert_enveloped, connect, read_response
from tests.http.servers import ServerThread, server_thread, video_config, wait_until
from tests.storage.helpers import make_job

TIMEOUT_S = 1.0
GIVE_UP_S = 30.0  # far past every timeout: reaching it means the client was never dropped
LARGE_ANSWER_BYTES = 32 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tiny_wan_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    config = replace(
        video_config(tiny_wan_dir, tmp_path_factory.mktemp("storage")),
        keepalive_timeout=TIMEOUT_S,
        request_timeout=TIMEOUT_S,
        send_timeout=TIMEOUT_S,
    )
    with server_thread(config) as running:
        yield running


def assert_others_are_served(url: str) -> None:
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


def is_closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def test_a_connection_that_sends_nothing_is_closed(server: ServerThread) -> None:
    with connect(server.url, timeout=0.2) as idle:
        wait_until(lambda: is_closed_by_server(idle), GIVE_UP_S, "the idle connection to close")


def test_a_request_head_sent_a_byte_at_a_time_is_cut_off(server: ServerThread) -> None:
    head = b"GET /health HTTP/1.1\r\nHost: slow\r\nX-Padding: " + b"a" * 10_000
    with connect(server.url, timeout=0.2) as slowloris:
        deadline = time.monotonic() + GIVE_UP_S
        for byte in head:
            assert time.monotonic() < deadline, "a slowloris head was read for too long"
            try:
                slowloris.sendall(bytes([byte]))
            except ConnectionError:
                break
            if is_closed_by_server(slowloris):
                break
            assert_others_are_served(server.url)
        else:
            pytest.fail("the whole slowloris head was read")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/videos", "multipart/form-data; boundary=b"),
        ("/v1/images/generations", "application/json"),
    ],
)
def test_a_body_that_stops_arriving_is_a_408_and_a_closed_connection(
    server: ServerThread, path: str, content_type: str
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 1000\r\n\r\n"
    )
    with connect(server.url, timeout=GIVE_UP_S) as stalled:
        stalled.sendall(head.encode() + b"--b\r\nConte")
        assert_others_are_served(server.url)
        response = read_response(stalled, "POST")
        assert stalled.recv(1) == b""

    assert assert_enveloped(response, 408)["code"] == "request_timeout"


def test_a_client_that_stops_reading_a_large_answer_is_dropped(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    store = server.server.app[VIDEO_JOBS].store
    job = make_job(model="tiny-wan", status=JobStatus.IN_PROGRESS)
    store.create(job)
    store.complete(job.id, bytes(LARGE_ANSWER_BYTES))
    with caplog.at_level(logging.INFO, logger="omni.http"), socket.socket() as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.settimeout(GIVE_UP_S)
        reader.connect(address(server.url))
        reader.sendall(f"GET /v1/videos/{job.id}/content HTTP/1.1\r\nHost: t\r\n\r\n".encode())

        def dropped() -> bool:
            assert_others_are_served(server.url)
            return "read nothing of its answer" in caplog.text

        wait_until(dropped, GIVE_UP_S, "the non-reading client to be dropped", interval=0.2)
        received = 0
        try:
            while chunk := reader.recv(1 << 20):
                received += len(chunk)
        except ConnectionError:
            pass

    assert received < LARGE_ANSWER_BYTES
