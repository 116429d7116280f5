"""GET /openapi.json: an OpenAPI 3.1 document of every route, its schemas from the msgspec types
the server decodes and encodes with, so the document cannot drift from what is enforced."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from aiohttp import web

from omni.http.chat import ChatCompletionRequest
from omni.http.edits import ImageEditForm
from omni.http.errors import ErrorBody
from omni.http.image_stream import CompletedEvent, ErrorEvent, PartialImageEvent
from omni.http.schemas import Health, ImageGenerationRequest, ImageGenerationResponse, ModelList
from omni.http.video_fields import VideoRequest

JSON = "application/json"
FORM = "multipart/form-data"
MP4 = "video/mp4"
EVENT_STREAM = "text/event-stream"


class VideoError(msgspec.Struct):
    code: str
    message: str


class VideoObject(msgspec.Struct, forbid_unknown_fields=True):
    """OpenAI's Video object as `VideoJob.to_json` writes it (a test keeps the two in step)."""

    id: str
    object: Literal["video"]
    created_at: int
    completed_at: int | None
    expires_at: int | None
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int
    model: str
    prompt: str
    seconds: str
    size: str
    remixed_from_video_id: None
    error: VideoError | None


class VideoList(msgspec.Struct):
    object: Literal["list"]
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


# (method, path) -> (summary, request body types, answer: a schema type or a media type)
OPERATIONS: dict[tuple[str, str], tuple[str, tuple[str, ...], type | str]] = {
    ("GET", "/health"): ("Liveness: 200 while the engine runs", (), Health),
    ("GET", "/v1/models"): ("The served model", (), ModelList),
    ("GET", "/v1/stats"): ("The engine's counters", (), "object"),
    ("GET", "/metrics"): ("Prometheus metrics (text format)", (), "text/plain"),
    ("GET", "/openapi.json"): ("This document", (), "object"),
    ("POST", "/v1/images/generations"): (
        "Generate images (SSE with stream)",
        (JSON,),
        ImageGenerationResponse,
    ),
    ("POST", "/v1/chat/completions"): ("An image as a chat answer", (JSON,), "object"),
    ("POST", "/v1/images/edits"): ("Edit an image (FLUX)", (FORM,), ImageGenerationResponse),
    ("POST", "/v1/videos"): ("Queue a video job", (JSON, FORM), VideoObject),
    ("POST", "/v1/videos/sync"): ("Generate a video and answer with it", (JSON, FORM), MP4),
    ("GET", "/v1/videos"): ("List video jobs", (), VideoList),
    ("GET", "/v1/videos/{video_id}"): ("One video job", (), VideoObject),
    ("GET", "/v1/videos/{video_id}/content"): ("A finished job's MP4", (), MP4),
    ("DELETE", "/v1/videos/{video_id}"): ("Delete a job and its file", (), "object"),
    ("GET", "/"): ("The playground page (off with --no-playground)", (), "text/html"),
    ("GET", "/playground"): ("The playground page (off with --no-playground)", (), "text/html"),
    ("GET", "/playground/static"): ("The playground's scripts and styles, by name", (), "*/*"),
}
REQUEST_SCHEMAS = {
    "/v1/images/generations": ImageGenerationRequest,
    "/v1/chat/completions": ChatCompletionRequest,
    "/v1/images/edits": ImageEditForm,  # its text fields; the files are image / image[] and mask
}
SCHEMA_TYPES = (ImageGenerationRequest, ChatCompletionRequest, VideoRequest, ErrorBody, *{
    answer for _, _, answer in OPERATIONS.values() if isinstance(answer, type)
})  # fmt: skip
# Routes that answer Server-Sent Events with `stream: true`, and the events they send.
STREAM_EVENTS = (PartialImageEvent, CompletedEvent, ErrorEvent)
STREAMED = ("/v1/images/generations", "/v1/images/edits")
SCHEMA_TYPES = (*SCHEMA_TYPES, ImageEditForm, *STREAM_EVENTS)


def ref(schema: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{schema.__name__}"}


def operation(path: str, summary: str, bodies: tuple[str, ...], answer: type | str) -> dict:
    content: dict[str, Any]
    if isinstance(answer, type):
        content = {JSON: {"schema": ref(answer)}}
    elif answer == "object":
        content = {JSON: {"schema": {"type": "object"}}}
    else:
        content = {answer: {"schema": {"type": "string", "format": "binary"}}}
    if path in STREAMED:
        content[EVENT_STREAM] = {"schema": {"oneOf": [ref(event) for event in STREAM_EVENTS]}}
    error = {"description": "An error", "content": {JSON: {"schema": ref(ErrorBody)}}}
    spec: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": {"description": "Success", "content": content}, "default": error},
    }
    if "{video_id}" in path:
        spec["parameters"] = [
            {"name": "video_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ]
    if bodies:
        schema = ref(REQUEST_SCHEMAS.get(path, VideoRequest))
        spec["requestBody"] = {"required": True, "content": {b: {"schema": schema} for b in bodies}}
    return spec


def openapi_document(app: web.Application) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        SCHEMA_TYPES, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        method, path = route.method, route.resource.canonical
        if method == "HEAD":
            continue
        summary, bodies, answer = OPERATIONS.get((method, path), (path, (), "object"))
        paths.setdefault(path, {})[method.lower()] = operation(path, summary, bodies, answer)
    return {
        "openapi": "3.1.0",
        "info": {"title": "omni", "version": "0.1.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app))
