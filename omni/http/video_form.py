"""The video request: every field of the seed's table, from multipart/form-data or from JSON.

An empty form field counts as left out; `video_fields` turns the rest into a VideoRequest. No
field is silently ignored: fields that are not built yet answer 400 saying so, and unknown
fields answer 422 naming them. The frame interpolation fields are checked by
`video_interpolation`.

Frames: `num_frames = round(seconds * fps)`, rounded half up, with `fps` the request's or the
model's default; the model then rounds any count to one it can generate (Wan: the nearest 4k+1,
80 -> 81). `seconds` alone sets the length at that fps; `fps` alone keeps the model's default
frame count and changes only the playback rate; `num_frames` with `seconds` must agree after
the model's rounding, or the request is refused (400).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from PIL import Image

from omni.engine import EngineService
from omni.http.body import (
    FORM_TYPES,
    is_json,
    read_form,
    read_json_object,
    unsupported_media_type,
)
from omni.http.errors import ApiError
from omni.http.images import check_model, parse_size
from omni.http.schemas import CacheSpec, cache_fields, sampling_fields
from omni.http.state import ENGINE
from omni.http.video_fields import (
    VideoRequest,
    convert,
    fold_extra_params,
    form_fields,
    json_object,
)
from omni.http.video_interpolation import frame_interpolation
from omni.limits import (
    MAX_SECONDS,
)
from omni.lora.spec import lora_specs
from omni.media import read_image, read_reference_image
from omni.request import GenerationParams


@dataclass(frozen=True, slots=True)
class VideoForm:
    request: VideoRequest
    image: Image.Image | None

    async def resolve(
        self, engine: EngineService, interpolation_dir: Path | None = None
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
            **sampling_fields(body),
            width=width,
            height=height,
            cache=cache,
            cache_threshold=cache_threshold,
            num_frames=body.num_frames,
            fps=body.fps,
            guidance_scale_2=body.guidance_scale_2,
            boundary_ratio=body.boundary_ratio,
            flow_shift=body.flow_shift,
            image=self.image,
            lora=lora_specs(body.lora),
            frame_interpolation=interpolation,
        )
        seconds = parse_seconds(body.seconds)
        if seconds is None:
            return await engine.validate(params)
        fps = body.fps or info.default_fps
        num_frames = max(1, math.floor(seconds * fps + 0.5))
        timed = await engine.validate(replace(params, num_frames=num_frames))
        if body.num_frames is not None:
            counted = await engine.validate(params)
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
    fold_extra_params(raw)
    body = convert(raw)
    check_one_reference(body, upload)
    check_served_model(body, upload is not None, request.app[ENGINE])  # before any decoding
    image = await asyncio.to_thread(reference_image, body, upload)  # decoding takes a while
    return VideoForm(body, image)


def check_served_model(body: VideoRequest, has_upload: bool, engine: EngineService) -> None:
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
