"""The error body every failure gets, and the middleware that turns exceptions into it.

A body carries OpenAI's envelope and the seed API's `detail` side by side, so clients written
against either read it: `{"error": {"message", "type", "param", "code"}, "detail": ...}`, where
`detail` is the message, or for 422 a list of `{"loc", "msg", "type"}`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from omni.errors import (
    EngineNotReadyError,
    EngineOverloadedError,
    InvalidRequestError,
    ModelNotFoundError,
    OmniError,
    ReplicaLostError,
    RequestAbortedError,
    RequestFailedError,
)
from omni.http.state import SERVER_CONFIG

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1
ERROR_TYPES = {
    401: "authentication_error",
    500: "server_error",
    503: "service_unavailable",
}
MISSING_FIELD = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")
UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")
AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
PATH_PART = re.compile(r"\.(?P<key>[^.\[]+)|\[(?P<index>\d+)\]")


class ValidationIssue(msgspec.Struct):
    loc: list[str | int]
    msg: str
    type: str


class ErrorInfo(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(msgspec.Struct):
    error: ErrorInfo
    detail: str | list[ValidationIssue]


class ApiError(Exception):
    """An error with its HTTP status; the middleware renders it as an ErrorBody."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        issues: list[ValidationIssue] | None = None,
        headers: dict[str, str] | None = None,
        close_connection: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = as_utf8(message)
        self.code = code
        self.param = None if param is None else as_utf8(param)
        self.issues = issues
        self.headers = headers or {}
        self.close_connection = close_connection

    @property
    def body(self) -> ErrorBody:
        error_type = ERROR_TYPES.get(self.status, "invalid_request_error")
        info = ErrorInfo(self.message, error_type, self.param, self.code)
        return ErrorBody(info, self.issues if self.issues is not None else self.message)

    def response(self) -> web.Response:
        response = web.Response(
            body=msgspec.json.encode(self.body),
            status=self.status,
            headers=self.headers,
            content_type="application/json",
        )
        if self.close_connection:  # the rest of the request's body will never be read
            response.force_close()
        return response


INVALID_ENUM = re.compile(r"Invalid enum value (?P<value>.*?)(?P<at> - at `\$\.(?P<field>\w+)`)$")


def as_utf8(text: str) -> str:
    """`text` with the bytes aiohttp could not decode (kept as lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_error(exc: msgspec.ValidationError, schema: Any = None) -> ApiError:
    """422 from msgspec's message, e.g. "Expected `int` <= 10 - at `$.n`"; an enum miss on a
    top-level field of `schema` names the allowed values, which msgspec's message does not."""
    text = enum_message(str(exc), schema)
    loc: list[str | int] = ["body"]
    at = AT_PATH.search(text)
    if at:
        text = text[: at.start()]
        for part in PATH_PART.finditer(at["path"]):
            loc.append(part["key"] if part["key"] is not None else int(part["index"]))
    missing = MISSING_FIELD.match(text)
    unknown = UNKNOWN_FIELD.match(text)
    if missing:
        loc.append(missing["field"])
        issue = ValidationIssue(loc, "field required", "value_error.missing")
    elif unknown:
        loc.append(unknown["field"])
        issue = ValidationIssue(loc, "extra fields not permitted", "value_error.extra")
    elif text.startswith("Expected `") and ", got `" in text:
        issue = ValidationIssue(loc, text, "type_error")
    else:
        issue = ValidationIssue(loc, text, "value_error")
    where = ".".join(str(part) for part in loc[1:]) or "body"
    param = str(loc[1]) if len(loc) > 1 else None
    return ApiError(
        422, f"{where}: {issue.msg}", code="validation_error", param=param, issues=[issue]
    )


def enum_message(text: str, schema: Any) -> str:
    """ "Invalid enum value 'url' - at `$.f`" as "f must be one of: a, b; got 'url' - at ..."."""
    enum = INVALID_ENUM.match(text)
    if enum is None or schema is None:
        return text
    try:
        field = msgspec.inspect.type_info(schema).fields  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return text
    allowed = next((literal_values(f.type) for f in field if f.encode_name == enum["field"]), [])
    if not allowed:
        return text
    return f"{enum['field']} must be one of: {', '.join(allowed)}; got {enum['value']}{enum['at']}"


def literal_values(info: Any) -> list[str]:
    """The values a Literal (possibly Optional) field takes, as text."""
    types = getattr(info, "types", (info,))
    return [str(v) for t in types for v in getattr(t, "values", ())]


def invalid_json(exc: msgspec.DecodeError | RecursionError) -> ApiError:
    if isinstance(exc, RecursionError):
        return ApiError(400, "the request body nests too deeply to be read", code="invalid_json")
    return ApiError(400, f"the request body is not valid JSON: {exc}", code="invalid_json")


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, f"the request body is larger than the limit of {limit} bytes", code="body_too_large"
    )


def from_omni_error(exc: OmniError) -> ApiError:
    message = str(exc)
    if isinstance(exc, InvalidRequestError):
        return ApiError(400, message, code=exc.code, param=exc.param)
    if isinstance(exc, ModelNotFoundError):
        return ApiError(404, message, code=exc.code)
    if isinstance(exc, EngineOverloadedError | ReplicaLostError):
        headers = {"Retry-After": str(RETRY_AFTER_S)}
        if isinstance(exc, ReplicaLostError):
            return ApiError(503, message, code=exc.code, headers=headers)
        return ApiError(503, f"the server is busy: {message}", code=exc.code, headers=headers)
    if isinstance(exc, EngineNotReadyError):
        return ApiError(503, message, code=exc.code)
    if isinstance(exc, RequestFailedError | RequestAbortedError):
        return ApiError(500, f"generation failed: {message}", code=exc.code)
    return ApiError(500, message, code=exc.code)


def from_http_exception(request: web.Request, exc: web.HTTPException) -> ApiError:
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPNotFound):
        message, code = f"no route for {request.method} {request.path}", "not_found"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        message, code = f"{request.method} is not allowed on {request.path}", "method_not_allowed"
        headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        return too_large(request.app[SERVER_CONFIG].max_body_bytes)
    else:
        message, code = exc.text or exc.reason, None
    return ApiError(exc.status, message, code=code, headers=headers)


def to_api_error(request: web.Request, exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OmniError):
        return from_omni_error(exc)
    if isinstance(exc, web.HTTPException):
        return from_http_exception(request, exc)
    if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:  # a request aiohttp refused
        message = " ".join(exc.message.split()) or "the request could not be read"
        return ApiError(exc.code, message, code="bad_request")
    logger.error("unhandled error in %s %s", request.method, request.path, exc_info=exc)
    return ApiError(500, f"internal server error ({type(exc).__name__})", code="internal_error")


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return to_api_error(request, exc).response()
    except Exception as exc:
        return to_api_error(request, exc).response()
