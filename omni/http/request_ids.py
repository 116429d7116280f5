"""Every response carries `x-request-id`: the client's own when it sent a sane one, else new."""

from __future__ import annotations

import re
import uuid

from aiohttp import web

from omni.http.state import REQUEST_ID

HEADER = "x-request-id"
CLIENT_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # visible ASCII: safe to echo


def request_id_of(request: web.Request) -> str:
    request_id = request.get(REQUEST_ID)
    if request_id is None:
        sent = request.headers.get(HEADER, "")
        request_id = sent if CLIENT_REQUEST_ID.match(sent) else uuid.uuid4().hex
        request[REQUEST_ID] = request_id
    return request_id


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook, so error and streamed responses get the header too."""
    response.headers[HEADER] = request_id_of(request)
