"""Bearer API keys: with a key configured, every route but /health (and the playground page's
files, which hold no data: the page asks for the key) asks for it."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from aiohttp import web

from omni.http.errors import ApiError

OPEN_PATHS = frozenset({"/health"})
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def api_key_middleware(api_key: str, is_open: Callable[[str], bool] | None = None) -> Any:
    """`is_open(path)` names more paths served without the key."""
    expected = api_key.encode()

    @web.middleware
    async def check_api_key(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path
        if path not in OPEN_PATHS and not (is_open is not None and is_open(path)):
            check_bearer(request.headers.get("Authorization"), expected)
        return await handler(request)

    return check_api_key


def check_bearer(authorization: str | None, expected: bytes) -> None:
    if not authorization:
        raise ApiError(
            401,
            "an API key is required: send the header 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers=CHALLENGE,
        )
    scheme, _, token = authorization.partition(" ")
    # aiohttp keeps header bytes that are not UTF-8 as surrogates; they must compare, not raise.
    presented = token.strip().encode(errors="surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
        raise ApiError(401, "the API key is not valid", code="invalid_api_key", headers=CHALLENGE)
