"""The video request's fields as sent, and how raw form or JSON fields become them.

Form fields arrive as strings and are converted to the field's type (422 when they do not
convert). The OpenAI SDK sends nested objects as `name[key]` form fields (e.g.
`input_reference[image_url]`, or `extra_params[...]` from `extra_body`), which are folded back
into objects; `extra_params` itself is merged into the top level, each field once.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields
from typing import Any

import msgspec

from omni.http.body import FormField
from omni.http.errors import ApiError, ValidationIssue, validation_error
from omni.limits import (
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
    lora: str | dict[str, Any] | list[Any] | None = None  # JSON text in a form (omni.lora.spec)


# What `extra_params` may carry: the generation fields, each once (here or at the top level).
EXTRA_PARAM_FIELDS = frozenset(f.name for f in fields(GenerationParams)) - {
    "prompt",
    "image",
    "frame_interpolation",  # sent as the four top-level fields
}
TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


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
