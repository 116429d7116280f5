"""Errors answered outside a handler's usual path still carry the envelope (issue 11, finding 6)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path, PosixPath
from typing import Any

import pytest

from omni.http.videos import VIDEO_JOBS
from omni.storage import JobStatus, VideoStore
from tests.http.raw import assert_enveloped, exchange, request_bytes
from tests.http.servers import ServerThread
from tests.http.test_errors import assert_still_serving
from tests.storage.helpers import make_job

CONTENT = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4


class VanishingPath(PosixPath):
    """A file that another request deletes just as this one reaches for it."""

    def is_file(self, **kwargs: Any) -> bool:
        self.unlink(missing_ok=True)
        return True

    def open(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.unlink(missing_ok=True)
        return super().open(*args, **kwargs)


@pytest.fixture
def store(video_server: ServerThread) -> VideoStore:
    return video_server.server.app[VIDEO_JOBS].store


@pytest.fixture
def completed_id(store: VideoStore) -> str:
    job = make_job(model="tiny-wan", status=JobStatus.IN_PROGRESS)
    store.create(job)
    store.complete(job.id, CONTENT)
    return job.id


def get_content(url: str, video_id: str, **headers: str) -> Any:
    return exchange(url, request_bytes("GET", f"/v1/videos/{video_id}/content", headers=headers))


@pytest.fixture
def vanishing_files(store: VideoStore) -> Iterator[None]:
    artifacts = store.artifacts  # the local files, where the server opens the content
    path = artifacts.path
    artifacts.path = lambda name: VanishingPath(path(name))  # type: ignore[method-assign]
    try:
        yield
    finally:
        del artifacts.path


def test_content_deleted_as_it_is_fetched_is_a_404_in_the_envelope(
    video_url: str, completed_id: str, vanishing_files: None
) -> None:
    response = get_content(video_url, completed_id)

    assert assert_enveloped(response, 404)["code"] == "video_not_found"


def test_content_is_served_whole_and_by_range(video_url: str, completed_id: str) -> None:
    whole = get_content(video_url, completed_id)
    part = get_content(video_url, completed_id, Range="bytes=4-11")

    assert (whole.status, whole.body) == (200, CONTENT)
    assert whole.headers["Content-Type"] == "video/mp4"
    assert (part.status, part.body) == (206, CONTENT[4:12])
    assert part.headers["Content-Range"] == f"bytes 4-11/{len(CONTENT)}"


@pytest.mark.parametrize("value", ["bytes=abc", f"bytes={len(CONTENT) + 10}-", "bytes=9-3"])
def test_a_range_that_cannot_be_served_is_a_416_in_the_envelope(
    video_url: str, completed_id: str, value: str
) -> None:
    response = get_content(video_url, completed_id, Range=value)

    assert_enveloped(response, 416)
    assert response.headers["Content-Range"] == f"bytes */{len(CONTENT)}"


def test_an_if_match_that_does_not_match_is_a_412_in_the_envelope(
    video_url: str, completed_id: str
) -> None:
    response = get_content(video_url, completed_id, **{"If-Match": '"something-else"'})

    assert_enveloped(response, 412)


def test_an_unchanged_file_is_a_304_for_its_etag(video_url: str, completed_id: str) -> None:
    etag = get_content(video_url, completed_id).headers["ETag"]

    response = get_content(video_url, completed_id, **{"If-None-Match": etag})

    assert (response.status, response.body) == (304, b"")


EARLY_ERRORS = {
    "a request line over the limit": request_bytes("GET", "/v1/models?q=" + "a" * 8200),
    "a header over the limit": request_bytes("GET", "/v1/models", headers={"X-Big": "a" * 9000}),
    "control bytes in the path": b"GET /v1/\x01\x7fmodels HTTP/1.1\r\nHost: t\r\n\r\n",
    "a Content-Length that is not a number": b"POST /v1/videos HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: ten\r\n\r\n",
    "two Content-Lengths": b"POST /v1/videos HTTP/1.1\r\nHost: t\r\n"
    b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "a method that is not a token": b"G(E)T /health HTTP/1.1\r\nHost: t\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("raw", EARLY_ERRORS.values(), ids=EARLY_ERRORS.keys())
def test_what_aiohttp_refuses_before_routing_is_a_400_in_the_envelope_logged_in_one_line(
    video_url: str, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        response = exchange(video_url, raw)

    assert_enveloped(response)
    assert response.headers["x-request-id"]
    assert not [record for record in caplog.records if record.exc_info]
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert "Traceback" not in caplog.text
    assert_still_serving(video_url)


def test_the_content_route_serves_nothing_outside_the_store(video_url: str, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    for video_id in ("..%2F..%2Fsecret", "video_" + "0" * 32):
        response = get_content(video_url, video_id)
        assert_enveloped(response, 404)
    assert os.path.exists(tmp_path / "secret")
