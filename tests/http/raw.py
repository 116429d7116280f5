"""Raw HTTP/1.1 for tests that send what no well-behaved client would: bytes in, status out."""

from __future__ import annotations

import http.client
import json
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from omni.http.errors import ErrorBody

BOUNDARY = "omni-test-boundary"


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def connect(url: str, timeout: float = 30.0) -> socket.socket:
    return socket.create_connection(address(url), timeout=timeout)


def read_response(sock: socket.socket, method: str = "GET") -> RawResponse:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    return RawResponse(response.status, response.headers, response.read())


def exchange(url: str, data: bytes, timeout: float = 30.0) -> RawResponse:
    """Send `data` as it is on a new connection and read one response."""
    with connect(url, timeout) as sock:
        sock.sendall(data)
        return read_response(sock, data.split(b" ", 1)[0].decode("latin-1"))


def request_bytes(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def post(url: str, path: str, body: bytes, content_type: str | None, **headers: str) -> RawResponse:
    if content_type is not None:
        headers = {"Content-Type": content_type, **headers}
    return exchange(url, request_bytes("POST", path, body, headers))


def multipart(*parts: bytes, boundary: str = BOUNDARY) -> bytes:
    """A multipart body from parts given as raw bytes: their headers, a blank line, the value."""
    delimiter = f"--{boundary}".encode()
    body = b"".join(delimiter + b"\r\n" + part + b"\r\n" for part in parts)
    return body + delimiter + b"--\r\n"


def text_part(name: str | bytes, value: str | bytes, *extra_headers: bytes) -> bytes:
    name = name.encode() if isinstance(name, str) else name
    value = value.encode() if isinstance(value, str) else value
    head = [b'Content-Disposition: form-data; name="' + name + b'"', *extra_headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + value


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def assert_enveloped(response: RawResponse, status: int | None = None) -> dict[str, Any]:
    """A 4xx answer in the error envelope (`error` and `detail`); returns the `error` object."""
    if status is not None:
        assert response.status == status, (response.status, response.body[:500])
    assert 400 <= response.status < 500, (response.status, response.body[:500])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == set(ErrorBody.__struct_fields__), body
    assert body["error"]["message"], body
    return body["error"]
