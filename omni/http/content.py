"""Sending a stored artifact, whole or one byte range, with every refusal in the error envelope.

The artifact is opened before anything is sent: a local file deleted after that still streams
from the open descriptor, and one deleted before is a 404. (aiohttp's FileResponse answers that
race, a bad Range and a failed If-Match with empty bodies, and sends through sendfile, which the
connection's stalled-reader timeout cannot see.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import hdrs, web

from omni.http.errors import ApiError
from omni.jobs.artifacts import ArtifactReader

CHUNK_BYTES = 256 * 1024
BYTE_RANGE = re.compile(r"bytes=(?P<first>[0-9]{0,19})-(?P<last>[0-9]{0,19})")


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    stop: int  # one past the last byte
    is_partial: bool


async def send_artifact(
    request: web.Request,
    open_artifact: Callable[[], ArtifactReader],
    content_type: str,
    etag: str,
    missing: ApiError,
) -> web.StreamResponse:
    """Send what `open_artifact` opens; `etag` names its content, which never changes; `missing`
    if it is gone."""
    try:
        file = await asyncio.to_thread(open_artifact)
    except FileNotFoundError:
        raise missing from None
    try:
        size = file.size
        check_if_match(request, etag)
        if matches(request.headers.get(hdrs.IF_NONE_MATCH), etag):
            return web.Response(status=304, headers={hdrs.ETAG: etag})
        byte_range = requested_range(request, size, etag)
        response = web.StreamResponse(
            status=206 if byte_range.is_partial else 200,
            headers={hdrs.CONTENT_TYPE: content_type, hdrs.ETAG: etag, hdrs.ACCEPT_RANGES: "bytes"},
        )
        if byte_range.is_partial:
            response.headers[hdrs.CONTENT_RANGE] = (
                f"bytes {byte_range.start}-{byte_range.stop - 1}/{size}"
            )
        response.content_length = byte_range.stop - byte_range.start
        await response.prepare(request)
        if request.method != hdrs.METH_HEAD:
            await copy(file, byte_range, response)
        await response.write_eof()
        return response
    finally:
        file.close()


async def copy(file: ArtifactReader, byte_range: ByteRange, response: web.StreamResponse) -> None:
    file.seek(byte_range.start)
    remaining = byte_range.stop - byte_range.start
    while remaining > 0:
        chunk = await asyncio.to_thread(file.read, min(CHUNK_BYTES, remaining))
        if not chunk:
            raise ConnectionError("the file shrank while it was being sent")
        await response.write(chunk)  # waits while the client is slow to read
        remaining -= len(chunk)


def check_if_match(request: web.Request, etag: str) -> None:
    if_match = request.headers.get(hdrs.IF_MATCH)
    if if_match is not None and not matches(if_match, etag):
        raise ApiError(
            412,
            f"If-Match {if_match!r} does not match this file's ETag {etag}",
            code="precondition_failed",
        )


def matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag in tags


def requested_range(request: web.Request, size: int, etag: str) -> ByteRange:
    whole = ByteRange(0, size, is_partial=False)
    header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if header is None or (if_range is not None and if_range.strip() != etag):
        return whole
    match = BYTE_RANGE.fullmatch(header.strip())
    if match is None or not (match["first"] or match["last"]):
        raise unsatisfiable(header, size, "send one range: bytes=FIRST-LAST, FIRST- or -LENGTH")
    if not match["first"]:  # the last LENGTH bytes
        length = int(match["last"])
        if length == 0:
            raise unsatisfiable(header, size, "a range of no bytes")
        return ByteRange(max(0, size - length), size, is_partial=True)
    first = int(match["first"])
    last = int(match["last"]) if match["last"] else size - 1
    if first >= size or last < first:
        raise unsatisfiable(header, size, f"the file has {size} bytes")
    return ByteRange(first, min(last + 1, size), is_partial=True)


def unsatisfiable(header: str, size: int, reason: str) -> ApiError:
    return ApiError(
        416,
        f"Range {header!r} cannot be served: {reason}",
        code="range_not_satisfiable",
        headers={hdrs.CONTENT_RANGE: f"bytes */{size}"},
    )
