"""Request and response bodies of the HTTP API, and their JSON codec."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web

from omni.http.errors import invalid_json, too_large, validation_error
from omni.http.state import SERVER_CONFIG

T = TypeVar("T")

MAX_SEED = 2**63 - 1
Scale = Annotated[float, msgspec.Meta(ge=0.0, le=20.0)]
OutputFormat = Literal["png", "jpeg", "webp"]


class ImageGenerationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenAI's fields, then omni's extensions. None (or leaving a field out) means default.

    A field not listed is refused (422), so a misspelt one never goes unnoticed; OpenAI's fields
    that choose among its own models' options (quality, style, ...) are accepted and ignored.
    """

    prompt: str
    model: str | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=10)] | None = None
    size: Annotated[str, msgspec.Meta(pattern="[xX]")] | None = None
    response_format: Literal["b64_json"] | None = None
    output_format: OutputFormat | None = None
    user: str | None = None
    safety_identifier: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    partial_images: Annotated[int, msgspec.Meta(ge=0)] | None = None
    stream: bool | None = None
    negative_prompt: str | None = None
    num_inference_steps: Annotated[int, msgspec.Meta(ge=1, le=200)] | None = None
    guidance_scale: Scale | None = None
    true_cfg_scale: Scale | None = None
    seed: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)] | None = None
    priority: int | None = None  # --scheduling-policy priority: lower runs first


class ImageData(msgspec.Struct):
    b64_json: str
    url: None = None
    revised_prompt: None = None


class ImageGenerationResponse(msgspec.Struct):
    created: int
    data: list[ImageData]
    size: str
    output_format: OutputFormat


class ModelCard(msgspec.Struct):
    id: str
    created: int
    object: str = "model"
    owned_by: str = "omni"


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class Health(msgspec.Struct):
    status: str
    model: str


async def read_json(request: web.Request, schema: type[T]) -> T:
    """The body decoded into `schema`: 413 when too large, 400 when not JSON, 422 when invalid."""
    limit = request.app[SERVER_CONFIG].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    try:
        return msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid_json(exc) from None


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )
