"""The video request: every field of the seed's table, from multipart/form-data or from JSON.

Form fields arrive as strings and are converted to the field's type (422 when they do not
convert); an empty form field counts as left out. The OpenAI SDK sends nested objects as
`name[key]` form fields (e.g. `input_reference[image_url]`, or `extra_params[...]` from
`extra_body`), which are folded back into objects. No field is silently ignored: fields that
are not built yet answer 400 saying so, and unknown fields answer 422 naming them.

Frames: `num_frames = round(seconds * fps)`, rounded half up, with `fps` the request's or the
model's default; the model then rounds any count to one it can generate (Wan: the nearest 4k+1,
80 -> 81). `seconds` alone sets the length at that fps; `fps` alone keeps the model's default
frame count and changes only the playback rate; `num_frames` with `seconds` must agree after
the model's rounding, or the request is refused (400).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass, fields, replace
from typing import Any

import msgspec
from aiohttp import web
from PIL import Image

from omni.engine import AsyncEngine
from omni.http.errors import ApiError, ValidationIssue, invalid_json, too_large, validation_error
from omni.http.images import check_model, parse_size
from omni.http.state import ENGINE, SERVER_CONFIG
from omni.media import read_image, read_reference_image
from omni.request import GenerationParams

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
BRACKETED = re.compile(r"^(?P<name>\w+)\[(?P<key>[^\[\]]+)\]$")
# Far beyond any model's frame limit (which refuses with its own message), and small enough
# that seconds * fps stays a finite number of frames.
MAX_SECONDS = 3600.0


class VideoRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields as sent; None (or leaving a field out) means the model's default."""

    prompt: str
    model: str | None = None
    seconds: str | float | None = None
    size: str | None = None
    user: str | None = None  # an end-user id for the client's own bookkeeping; not used
    input_reference: str | dict[str, Any] | None = None  # the uploaded file is read apart
    image_reference: str | dict[str, Any] | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None
    true_cfg_scale: float | None = None
    seed: int | None = None
    priority: int | None = None
    negative_prompt: str | None = None
    enable_frame_interpolation: bool | None = None
    frame_interpolation_exp: int | None = None
    frame_interpolation_scale: float | None = None
    frame_interpolation_model_path: str | None = None


# What `extra_params` may carry: the generation fields, each once (here or at the top level).
EXTRA_PARAM_FIELDS = frozenset(f.name for f in fields(GenerationParams)) - {"prompt", "image"}
INTERPOLATION_FIELDS = (
    "enable_frame_interpolation",
    "frame_interpolation_exp",
    "frame_interpolation_scale",
    "frame_interpolation_model_path",
)
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True, slots=True)
class VideoForm:
    request: VideoRequest
    image: Image.Image | None

    def resolve(self, engine: AsyncEngine) -> GenerationParams:
        """The params the model will run, validated by the model; raises a 4xx error."""
        body = self.request
        info = engine.info
        width, height = self._size()
        params = GenerationParams(
            prompt=body.prompt,
            negative_prompt=body.negative_prompt,
            width=width,
            height=height,
            num_inference_steps=body.num_inference_steps,
            guidance_scale=body.guidance_scale,
            true_cfg_scale=body.true_cfg_scale,
            seed=body.seed,
            priority=body.priority,
            num_frames=body.num_frames,
            fps=body.fps,
            guidance_scale_2=body.guidance_scale_2,
            boundary_ratio=body.boundary_ratio,
            flow_shift=body.flow_shift,
            image=self.image,
        )
        seconds = parse_seconds(body.seconds)
        if seconds is None:
            return engine.resolve(params)
        fps = body.fps or info.default_fps
        num_frames = max(1, math.floor(seconds * fps + 0.5))
        timed = engine.resolve(replace(params, num_frames=num_frames))
        if body.num_frames is not None:
            counted = engine.resolve(params)
            if counted.num_frames != timed.num_frames:
                raise ApiError(
                    400,
                    f"seconds={seconds:g} at {fps} fps gives {timed.num_frames} frames but "
                    f"num_frames={body.num_frames} gives {counted.num_frames}: send one of them, "
                    "or values that agree",
                    code="conflicting_fields",
                    param="num_frames",
                )
        return timed

    def _size(self) -> tuple[int | None, int | None]:
        body = self.request
        width, height = parse_size(body.size)
        for name, from_size, given in (
            ("width", width, body.width),
            ("height", height, body.height),
        ):
            if from_size is not None and given is not None and from_size != given:
                raise ApiError(
                    400,
                    f"size {body.size!r} and {name}={given} disagree: send one of them",
                    code="conflicting_fields",
                    param=name,
                )
        return width or body.width, height or body.height


async def read_video_form(request: web.Request) -> VideoForm:
    """The request's fields from multipart/form-data, urlencoded form or JSON; 4xx when bad."""
    upload = None
    if request.content_type in FORM_TYPES:
        raw, upload = await read_form(request)
    # A body sent without a Content-Type reaches aiohttp as application/octet-stream.
    elif request.content_type in ("application/json", "application/octet-stream", ""):
        raw = await read_json_object(request)
    else:
        raise ApiError(
            415,
            f"send multipart/form-data or application/json, not {request.content_type}",
            code="unsupported_media_type",
        )
    check_lora(raw.pop("lora", None))
    fold_extra_params(raw)
    body = convert(raw)
    check_frame_interpolation(body)
    check_one_reference(body, upload)
    check_served_model(body, upload is not None, request.app[ENGINE])  # before any decoding
    image = await asyncio.to_thread(reference_image, body, upload)  # decoding takes a while
    return VideoForm(body, image)


def check_served_model(body: VideoRequest, has_upload: bool, engine: AsyncEngine) -> None:
    """Refuse what the served model cannot make (503 while it loads) before reading images."""
    check_model(body.model, engine.config.name)
    info = engine.info
    if info.kind != "video":
        raise ApiError(
            400,
            f"{engine.config.name} is an image model: /v1/videos needs a video model "
            "such as omni-tiny-video (this server answers /v1/images/generations)",
            code="model_not_video",
            param="model",
        )
    has_reference = has_upload or body.input_reference is not None
    if not info.takes_image and (has_reference or body.image_reference is not None):
        raise ApiError(
            400,
            f"{engine.config.name} is a text-to-video model: it takes no input image",
            code="invalid_request",
            param="image_reference" if body.image_reference is not None else "input_reference",
        )


async def read_form(request: web.Request) -> tuple[dict[str, Any], bytes | None]:
    limit = request.app[SERVER_CONFIG].max_body_bytes
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    except ValueError as exc:  # no boundary, cut short, or text that is not UTF-8
        raise ApiError(
            400, f"the form body could not be read: {exc}", code="invalid_form"
        ) from None
    raw: dict[str, Any] = {}
    upload = None
    for key, value in form.items():
        if isinstance(value, web.FileField):
            if key != "input_reference" or upload is not None:
                raise ApiError(422, f"{key} must be one text field, not a file", param=key)
            upload = value.file.read()
        elif value.strip():
            put_field(raw, key, value)
    if upload is not None and "input_reference" in raw:
        raise ApiError(400, "input_reference is sent more than once", param="input_reference")
    return raw, upload


def put_field(raw: dict[str, Any], key: str, value: str) -> None:
    """raw[key] = value, where a key `name[inner]` sets raw[name][inner]."""
    target, name = raw, key
    bracketed = BRACKETED.match(key)
    if bracketed:
        target = raw.setdefault(bracketed["name"], {})
        name = bracketed["key"]
        if not isinstance(target, dict):
            raise ApiError(400, f"{bracketed['name']} is sent both whole and by key")
    if name in target:
        raise ApiError(400, f"{key} is sent more than once", param=key)
    target[name] = value


async def read_json_object(request: web.Request) -> dict[str, Any]:
    limit = request.app[SERVER_CONFIG].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    try:
        body = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise invalid_json(exc) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return {key: value for key, value in body.items() if value is not None}


def json_object(value: Any, param: str) -> dict[str, Any]:
    """A field that holds a JSON object, sent as an object or as JSON text; None is {}."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ApiError(
                400, f"{param} is not valid JSON: {exc}", code="invalid_json", param=param
            ) from None
        except RecursionError:
            raise ApiError(
                400, f"{param} nests too deeply to be read", code="invalid_json", param=param
            ) from None
    if not isinstance(value, dict):
        raise ApiError(
            400, f"{param} must be a JSON object, got {type(value).__name__}", param=param
        )
    return value


def check_lora(value: Any) -> None:
    if json_object(value, "lora"):
        raise ApiError(400, "LoRA is not supported yet", code="unsupported_field", param="lora")


def fold_extra_params(raw: dict[str, Any]) -> None:
    extras = json_object(raw.pop("extra_params", None), "extra_params")
    unknown = sorted(set(extras) - EXTRA_PARAM_FIELDS)
    if unknown:
        raise ApiError(
            400,
            f"extra_params has keys omni does not understand: {', '.join(unknown)} "
            f"(it takes {', '.join(sorted(EXTRA_PARAM_FIELDS))})",
            code="unknown_field",
            param="extra_params",
        )
    for key, value in extras.items():
        if key in raw:
            raise ApiError(
                400, f"{key} is sent both as a field and in extra_params", param="extra_params"
            )
        if value is not None:
            raw[key] = value


def convert(raw: dict[str, Any]) -> VideoRequest:
    try:
        return msgspec.convert(raw, VideoRequest, strict=False)
    except msgspec.ValidationError as exc:
        error = validation_error(exc)
        expected = expected_type(error.param)
        if expected is None or error.param not in raw:
            raise error from None
        message = f"{error.param} must be {expected}, got {raw[error.param]!r}"
        issue = ValidationIssue(["body", error.param], message, "type_error")
        raise ApiError(
            422, message, code="validation_error", param=error.param, issues=[issue]
        ) from None


def expected_type(field: str | None) -> str | None:
    for info in msgspec.structs.fields(VideoRequest):
        if info.name == field:
            names = [TYPE_NAMES[t] for t in TYPE_NAMES if t in getattr(info.type, "__args__", ())]
            return " or ".join(names) or None
    return None


def check_frame_interpolation(body: VideoRequest) -> None:
    given = [name for name in INTERPOLATION_FIELDS[1:] if getattr(body, name) is not None]
    if body.enable_frame_interpolation:  # false is the same as leaving it out
        given.insert(0, "enable_frame_interpolation")
    if given:
        raise ApiError(
            400,
            f"frame interpolation is not built yet ({', '.join(given)})",
            code="unsupported_field",
            param=given[0],
        )


def parse_seconds(seconds: str | float | None) -> float | None:
    if seconds is None:
        return None
    try:
        value = float(seconds)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ApiError(400, f"seconds must be a positive number, got {seconds!r}", param="seconds")
    if value > MAX_SECONDS:
        raise ApiError(
            400, f"seconds must be at most {MAX_SECONDS:g}, got {seconds!r}", param="seconds"
        )
    return value


# Reference images ------------------------------------------------------------------------------


def check_one_reference(body: VideoRequest, upload: bytes | None) -> None:
    if (
        upload is not None or body.input_reference is not None
    ) and body.image_reference is not None:
        raise ApiError(
            400,
            "send input_reference or image_reference, not both",
            code="conflicting_fields",
            param="image_reference",
        )


def reference_image(body: VideoRequest, upload: bytes | None) -> Image.Image | None:
    if upload is not None:
        return read_image(upload, "input_reference")
    if body.input_reference is not None:
        return read_reference_image(body.input_reference, "input_reference")
    if body.image_reference is not None:
        return read_reference_image(body.image_reference, "image_reference")
    return None
