"""The video request: every field of the seed's table, from multipart/form-data or from JSON.

Form fields arrive as strings and are converted to the field's type (422 when they do not
convert); an empty form field counts as left out. The OpenAI SDK sends nested objects as
`name[key]` form fields (e.g. `input_reference[image_url]`, or `extra_params[...]` from
`extra_body`), which are folded back into objects. No field is silently ignored: fields that
are not built yet answer 400 saying so, and unknown fields answer 422 naming them. The frame
interpolation fields are checked by `video_interpolation`.

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
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from PIL import Image

from omni.engine import AsyncEngine
from omni.http.body import (
    FORM_TYPES,
    FormField,
    is_json,
    read_form,
    read_json_object,
    unsupported_media_type,
)
from omni.http.errors import ApiError, ValidationIssue, validation_error
from omni.http.images import check_model, parse_size
from omni.http.schemas import CacheSpec, cache_fields
from omni.http.state import ENGINE
from omni.http.video_interpolation import frame_interpolation
from omni.limits import (
    MAX_SECONDS,
    RANGES_AS_400,
    FlowShift,
    Fps,
    FrameInterpolationExp,
    FrameInterpolationScale,
    Guidance,
    NumFrames,
    Priority,
    Ratio,
    Seconds,
    Seed,
    Side,
    Steps,
)
from omni.media import read_image, read_reference_image
from omni.request import GenerationParams

BRACKETED = re.compile(r"^(?P<name>\w+)\[(?P<key>[^\[\]]+)\]$")


class VideoRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields as sent; None (or leaving a field out) means the model's default."""

    prompt: str
    model: str | None = None
    seconds: str | Seconds | None = None
    size: str | None = None
    user: str | None = None  # an end-user id for the client's own bookkeeping; not used
    input_reference: str | dict[str, Any] | None = None  # the uploaded file is read apart
    image_reference: str | dict[str, Any] | None = None
    width: Side | None = None
    height: Side | None = None
    num_frames: NumFrames | None = None
    fps: Fps | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    guidance_scale_2: Guidance | None = None
    boundary_ratio: Ratio | None = None
    flow_shift: FlowShift | None = None
    true_cfg_scale: Guidance | None = None
    seed: Seed | None = None
    priority: Priority | None = None
    sampler: str | None = None
    cache: str | dict[str, Any] | None = None  # a type, or {"type": ..., "threshold": ...}
    negative_prompt: str | None = None
    enable_frame_interpolation: bool | None = None
    frame_interpolation_exp: FrameInterpolationExp | None = None
    frame_interpolation_scale: FrameInterpolationScale | None = None
    frame_interpolation_model_path: str | None = None


# What `extra_params` may carry: the generation fields, each once (here or at the top level).
EXTRA_PARAM_FIELDS = frozenset(f.name for f in fields(GenerationParams)) - {
    "prompt",
    "image",
    "frame_interpolation",  # sent as the four top-level fields
}
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


@dataclass(frozen=True, slots=True)
class VideoForm:
    request: VideoRequest
    image: Image.Image | None

    def resolve(
        self, engine: AsyncEngine, interpolation_dir: Path | None = None
    ) -> GenerationParams:
        """The params the model will run, validated by the model; raises a 4xx error.

        `interpolation_dir` is the allow-list root of frame-interpolation models.
        """
        body = self.request
        info = engine.info
        width, height = self._size()
        cache, cache_threshold = video_cache_fields(body.cache)
        interpolation = frame_interpolation(
            body.enable_frame_interpolation,
            body.frame_interpolation_exp,
            body.frame_interpolation_scale,
            body.frame_interpolation_model_path,
            info,
            interpolation_dir,
        )
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
            sampler=body.sampler,
            cache=cache,
            cache_threshold=cache_threshold,
            num_frames=body.num_frames,
            fps=body.fps,
            guidance_scale_2=body.guidance_scale_2,
            boundary_ratio=body.boundary_ratio,
            flow_shift=body.flow_shift,
            image=self.image,
            frame_interpolation=interpolation,
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
        raw, upload = form_fields(await read_form(request))
    elif is_json(request):
        raw = await read_json_object(request)
    else:
        raise unsupported_media_type(request, "multipart/form-data or application/json")
    check_lora(raw.pop("lora", None))
    fold_extra_params(raw)
    body = convert(raw)
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


def form_fields(fields: list[FormField]) -> tuple[dict[str, Any], bytes | None]:
    """The text fields by name, and the uploaded input_reference if there is one."""
    raw: dict[str, Any] = {}
    upload = None
    for field in fields:
        if field.file is not None:
            if field.name != "input_reference" or upload is not None:
                raise ApiError(
                    422, f"{field.name} must be one text field, not a file", param=field.name
                )
            upload = field.file
        elif field.text is not None and field.text.strip():
            put_field(raw, field.name, field.text)
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


def video_cache_fields(value: str | dict[str, Any] | None) -> tuple[str | None, float | None]:
    """The `cache` field of a form or JSON body: a type name, or an object (also as JSON text)."""
    if isinstance(value, str) and not value.lstrip().startswith("{"):
        return cache_fields(value)
    if value is None:
        return None, None
    try:
        spec = msgspec.convert(json_object(value, "cache"), CacheSpec)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"cache: {exc}", param="cache") from None
    return cache_fields(spec)


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
        error = validation_error(exc, VideoRequest)
        expected = expected_type(error.param)
        is_type_error = bool(error.issues) and error.issues[0].type == "type_error"
        if error.param in RANGES_AS_400 and not is_type_error:
            low, high = RANGES_AS_400[error.param]
            raise ApiError(
                400,
                f"{error.param} must be between {low:g} and {high:g}, got {raw.get(error.param)!r}",
                param=error.param,
            ) from None
        if expected is None or error.param not in raw or not is_type_error:
            raise error from None
        message = f"{error.param} must be {expected}, got {raw[error.param]!r}"
        issue = ValidationIssue(["body", error.param], message, "type_error")
        raise ApiError(
            422, message, code="validation_error", param=error.param, issues=[issue]
        ) from None


def expected_type(field: str | None) -> str | None:
    for info in msgspec.structs.fields(VideoRequest):
        if info.name == field:
            types = [getattr(t, "__origin__", t) for t in getattr(info.type, "__args__", ())]
            names = [TYPE_NAMES[t] for t in TYPE_NAMES if t in types]
            return " or ".join(names) or None
    return None


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
