"""Request and response bodies of the HTTP API, and their JSON codec."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from omni.limits import Guidance, NumImages, PartialImages, Percent, Priority, Seed, Steps
from omni.lora.spec import LoraValue

OutputFormat = Literal["png", "jpeg", "webp"]


class CacheSpec(msgspec.Struct, forbid_unknown_fields=True):
    """The `cache` extension field as an object: {"type": "fbcache", "threshold": 0.1}."""

    type: str
    threshold: float | None = None


def cache_fields(value: str | CacheSpec | None) -> tuple[str | None, float | None]:
    """(cache type, threshold) from the `cache` field: "none", "fbcache" or a CacheSpec."""
    if isinstance(value, CacheSpec):
        return value.type, value.threshold
    return value, None


SAMPLING_FIELDS = ("prompt", "negative_prompt", "num_inference_steps", "guidance_scale",
                   "true_cfg_scale", "seed", "priority", "sampler")  # fmt: skip


def sampling_fields(body: msgspec.Struct) -> dict[str, Any]:
    """The fields that image generations, image edits and videos share and pass to the engine
    as they are."""
    return {name: getattr(body, name) for name in SAMPLING_FIELDS}


class ImageGenerationRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenAI's fields, then omni's extensions. None (or leaving a field out) means default.

    A field not listed is refused (422), so a misspelt one never goes unnoticed; OpenAI's fields
    that choose among its own models' options (quality, style, ...) are accepted and ignored.
    """

    prompt: str
    model: str | None = None
    n: NumImages | None = None
    size: Annotated[str, msgspec.Meta(pattern="[xX]")] | None = None
    response_format: Literal["b64_json"] | None = None
    output_format: OutputFormat | None = None
    user: str | None = None
    safety_identifier: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: Percent | None = None
    partial_images: PartialImages | None = None
    stream: bool | None = None
    negative_prompt: str | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    true_cfg_scale: Guidance | None = None
    seed: Seed | None = None
    priority: Priority | None = None  # --scheduling-policy priority: lower runs first
    sampler: str | None = None  # euler, unipc or dpm++2m; the model's own scheduler by default
    cache: str | CacheSpec | None = None  # step caching; the server's --cache by default
    lora: LoraValue | None = None  # {"name", "local_path", "scale"} or a list of them, stacked


class ImageData(msgspec.Struct):
    b64_json: str
    url: None = None
    revised_prompt: None = None


class ImageGenerationResponse(msgspec.Struct):
    created: int
    data: list[ImageData]
    size: str
    output_format: OutputFormat


class ModelDefaults(msgspec.Struct):
    """What the model uses for the fields a request leaves out (None: no default of its own)."""

    size: str
    num_inference_steps: int | None
    guidance_scale: float | None
    num_frames: int | None = None  # video models only
    fps: int | None = None


class ModelCard(msgspec.Struct):
    """OpenAI's model object, then omni's fields: all None until the model has loaded."""

    id: str
    created: int
    object: str = "model"
    owned_by: str = "omni"
    kind: Literal["image", "video"] | None = None
    defaults: ModelDefaults | None = None
    sizes: list[str] | None = None  # suggestions; any size within the bounds below is accepted
    size_multiple: int | None = None  # width and height are multiples of this
    max_side: int | None = None
    takes_image: bool | None = None  # image-to-video: a video request needs a reference image
    can_edit: bool | None = None  # serves /v1/images/edits


class ModelList(msgspec.Struct):
    data: list[ModelCard]
    object: str = "list"


class Health(msgspec.Struct):
    status: str
    model: str


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body),
        status=status,
        headers=headers,
        content_type="application/json",
    )
