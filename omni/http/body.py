"""Reading request bodies: JSON and forms, bounded in size, in time and in fields.

Every way a body can be malformed (cut short, mis-encoded, an unknown charset, a part header
with control bytes, a Content-Encoding the bytes do not have) becomes a 4xx with its reason.
"""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import msgspec
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from omni.http.errors import ApiError, invalid_json, too_large, validation_error
from omni.http.state import SERVER_CONFIG
from omni.limits import MAX_FORM_FIELDS

T = TypeVar("T")

# aiohttp reports a body sent without a Content-Type as application/octet-stream.
JSON_TYPES = ("application/json", "application/octet-stream")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
IDENTITY_ENCODINGS = ("", "identity")
# What aiohttp's parsers raise for bytes they cannot read: LookupError for an unknown charset,
# RuntimeError for an unknown Content-Transfer-Encoding, ValueError for the rest.
# RequestPayloadError wraps what went wrong in the body's transfer or content encoding.
UNREADABLE = (HttpProcessingError, RequestPayloadError, ValueError, LookupError, RuntimeError)


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    text: str | None = None  # a text field
    file: bytes | None = None  # an uploaded file


def is_json(request: web.Request) -> bool:
    content_type = request.content_type
    return content_type in JSON_TYPES or content_type.endswith("+json")


def unsupported_media_type(request: web.Request, expected: str) -> ApiError:
    return ApiError(
        415,
        f"send {expected}, not {request.content_type}",
        code="unsupported_media_type",
    )


async def read_json(request: web.Request, schema: type[T]) -> T:
    """The body decoded into `schema`: 415 unless JSON, 400 when not JSON, 422 when invalid."""
    if not is_json(request):
        raise unsupported_media_type(request, "application/json")
    body = await read_body(request)
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, schema) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid_json(exc) from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """A JSON object body, its null members left out."""
    try:
        body = msgspec.json.decode(await read_body(request))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid_json(exc) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return {key: value for key, value in body.items() if value is not None}


async def read_body(request: web.Request, code: str = "invalid_body") -> bytes:
    limit = request.app[SERVER_CONFIG].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    async with reading(request, code):
        return await request.read()


async def read_form(request: web.Request) -> list[FormField]:
    """The fields of a multipart/form-data or urlencoded body, in the order sent."""
    if request.content_type == "multipart/form-data":
        async with reading(request, "invalid_form"):
            return await read_multipart(request)
    body = await read_body(request, "invalid_form")
    async with reading(request, "invalid_form"):
        text = body.decode(request.charset or "utf-8")
        if text.count("&") >= MAX_FORM_FIELDS:
            raise too_many_fields()
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    return [FormField(checked_name(name), text=value) for name, value in pairs]


async def read_multipart(request: web.Request) -> list[FormField]:
    limit = request.app[SERVER_CONFIG].max_body_bytes
    reader = await request.multipart()
    fields: list[FormField] = []
    size = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise ApiError(
                400, "a form part is itself multipart: send flat fields", code="invalid_form"
            )
        if len(fields) == MAX_FORM_FIELDS:
            raise too_many_fields()
        if part.name is None:
            raise ApiError(400, "a form part has no name", code="invalid_form")
        name = checked_name(part.name)
        encoding = part.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in IDENTITY_ENCODINGS:  # decompressed it could outgrow any limit
            raise ApiError(
                400,
                f"form field {name} has Content-Encoding {encoding}: send it as is",
                code="invalid_form",
                param=name,
            )
        data = bytearray()
        while chunk := await part.read_chunk():
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            data += chunk
        value = part.decode(bytes(data))  # base64 and quoted-printable only shrink
        if part.filename is not None:
            fields.append(FormField(name, file=bytes(value)))
        else:
            charset = part.get_charset(default="utf-8")
            codecs.lookup(charset)
            fields.append(FormField(name, text=bytes(value).decode(charset)))
    return fields


def checked_name(name: str) -> str:
    """A field name as text; aiohttp keeps bytes that are not UTF-8 as lone surrogates."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, "a form field's name is not UTF-8", code="invalid_form") from None
    return name


def too_many_fields() -> ApiError:
    return ApiError(413, f"the form has more than {MAX_FORM_FIELDS} fields", code="too_many_fields")


@asynccontextmanager
async def reading(request: web.Request, code: str) -> AsyncIterator[None]:
    """Bound the time a body may take to arrive, and turn what breaks reading it into a 4xx."""
    config = request.app[SERVER_CONFIG]
    try:
        async with asyncio.timeout(config.request_timeout):
            yield
    except TimeoutError:
        request.content.feed_eof()  # abandon the rest: aiohttp would linger to read it
        raise ApiError(
            408,
            f"the request body did not arrive within {config.request_timeout:g} s",
            code="request_timeout",
            close_connection=True,
        ) from None
    except web.HTTPRequestEntityTooLarge:
        raise too_large(config.max_body_bytes) from None
    except UNREADABLE as exc:
        raise ApiError(
            400, f"the request body could not be read: {reason(exc)}", code=code
        ) from None


def reason(exc: BaseException) -> str:
    if isinstance(exc, RequestPayloadError) and exc.__cause__ is not None:
        return reason(exc.__cause__)
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
