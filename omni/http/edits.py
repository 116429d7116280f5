"""POST /v1/images/edits: OpenAI's multipart edit form onto FLUX image-to-image and inpainting,
FLUX.1 Kontext and Qwen-Image-Edit (reference-image edits).

`image` (or `image[]`) is one upload or several (up to 16); `mask` is a PNG whose transparent
pixels mark what to repaint. The edit is a text-to-image request that starts down the schedule
(omni.models.flux_edit), so it batches with generations.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any, Literal

import msgspec
import numpy as np
from aiohttp import web
from PIL import Image

from omni.http.body import FORM_TYPES, FormField, read_form, unsupported_media_type
from omni.http.errors import ApiError, validation_error
from omni.http.image_stream import ImageStream, check_stream
from omni.http.images import check_model, check_seeds, images_response, parse_size, seeded
from omni.http.schemas import OutputFormat, sampling_fields
from omni.http.state import ENGINE
from omni.limits import (
    MAX_EDIT_IMAGES,
    Guidance,
    NumImages,
    PartialImages,
    Percent,
    Priority,
    Seed,
    Steps,
    Strength,
)
from omni.lora.spec import lora_specs
from omni.media import read_image
from omni.models.base import ModelInfo
from omni.request import GenerationParams

IMAGE_FIELDS = ("image", "image[]")


class ImageEditForm(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The form's text fields: OpenAI's, then omni's extensions (None: the default)."""

    prompt: str
    model: str | None = None
    n: NumImages | None = None
    size: str | None = None
    response_format: Literal["b64_json"] | None = None
    output_format: OutputFormat | None = None
    user: str | None = None
    quality: str | None = None
    background: str | None = None
    input_fidelity: str | None = None
    output_compression: Percent | None = None
    stream: bool | None = None
    partial_images: PartialImages | None = None
    strength: Strength | None = None
    negative_prompt: str | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    true_cfg_scale: Guidance | None = None
    seed: Seed | None = None
    priority: Priority | None = None
    sampler: str | None = None
    lora: str | None = None  # JSON text: {"name", "local_path", "scale"} or a list of them


async def create_image_edits(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    if request.content_type not in FORM_TYPES:  # urlencoded gets "image is required"
        raise unsupported_media_type(request, "multipart/form-data")
    form, images, mask = split_form(await read_form(request))
    check_can_edit(engine.info)
    check_model(form.model, engine.config.name)
    check_seeds(form.seed, form.n or 1)
    check_stream(form.stream, form.n)
    image, mask_image = await asyncio.to_thread(
        read_uploads, images, mask, engine.info.max_edit_images
    )
    params = edit_params(form, image, mask_image, engine.info)
    await engine.validate(params)  # refuse what the model cannot serve before any work
    if form.stream:
        stream = ImageStream(
            "image_edit", form.output_format or "png", form.quality, form.background
        )
        return await stream.run(request, engine, params)
    finished = await engine.generate_many(seeded(params, form.n or 1))
    return await images_response(finished, form.output_format or "png")


def split_form(fields: list[FormField]) -> tuple[ImageEditForm, list[bytes], bytes | None]:
    """(the text fields, the `image` uploads in order, the `mask` upload)."""
    text: dict[str, str] = {}
    images: list[bytes] = []
    mask = None
    for field in fields:
        if field.file is not None and field.name in IMAGE_FIELDS:
            images.append(field.file)
        elif field.file is not None and field.name == "mask":
            if mask is not None:
                raise ApiError(400, "mask is sent more than once: send one", param="mask")
            mask = field.file
        elif field.name in (*IMAGE_FIELDS, "mask"):
            raise ApiError(
                400, f"{field.name} must be an uploaded file, not text", param=field.name
            )
        elif field.file is not None:
            raise ApiError(
                400, f"{field.name} is not a file field (files: image, mask)", param=field.name
            )
        elif field.name in text:
            raise ApiError(400, f"{field.name} is sent more than once", param=field.name)
        elif field.text is not None and field.text.strip():
            text[field.name] = field.text
    if not images:
        raise ApiError(400, "image is required: upload the image to edit", param="image")
    if len(images) > MAX_EDIT_IMAGES:
        raise ApiError(
            400,
            f"image has {len(images)} files: at most {MAX_EDIT_IMAGES} are accepted",
            param="image",
        )
    try:
        form = msgspec.convert(text, ImageEditForm, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, ImageEditForm) from None
    return form, images, mask


def check_can_edit(info: ModelInfo) -> None:
    if not info.can_edit:
        raise ApiError(
            400,
            f"model {info.name} cannot edit images: /v1/images/edits serves FLUX, FLUX.1 Kontext "
            "and Qwen-Image-Edit models",
            code="unsupported_model",
            param="model",
        )


def read_uploads(
    images: list[bytes], mask: bytes | None, max_images: int = 1
) -> tuple[Any, Image.Image | None]:
    """The image (a tuple of them when there are several), and the mask as a repaint map
    (white where alpha is transparent)."""
    if len(images) > max_images:
        allowed = "one image: send one" if max_images == 1 else f"at most {max_images} images"
        raise ApiError(
            400, f"image has {len(images)} files but this model edits {allowed}", param="image"
        )
    decoded = tuple(read_image(data, "image") for data in images)
    image = decoded[0] if len(decoded) == 1 else decoded
    if mask is None:
        return image, None
    rgba = read_image(mask, "mask", mode="RGBA")
    first = decoded[0]  # what a mask applies to
    if rgba.size != first.size:
        raise ApiError(
            400,
            f"mask is {rgba.size[0]}x{rgba.size[1]} but image is {first.size[0]}x"
            f"{first.size[1]}: the mask must be the image's size",
            param="mask",
        )
    alpha = np.asarray(rgba)[..., 3]
    return image, Image.fromarray((255 - alpha).astype(np.uint8), mode="L")


def default_size(image: Image.Image, size_multiple: int) -> tuple[int, int]:
    """An edit's size when the client sends none: the image's, rounded down to the model's
    size multiple."""
    width = max(size_multiple, image.width // size_multiple * size_multiple)
    height = max(size_multiple, image.height // size_multiple * size_multiple)
    return width, height


def edit_params(
    form: ImageEditForm, image: Any, mask: Image.Image | None, info: ModelInfo
) -> GenerationParams:
    """Only what the client sent; without `size` the image's own (the last one's, when there
    are several), rounded down to the model's size multiple."""
    width, height = parse_size(form.size)
    if width is None or height is None:
        last = image[-1] if isinstance(image, tuple) else image
        width, height = default_size(last, info.size_multiple)
    params = GenerationParams(
        **sampling_fields(form),
        width=width,
        height=height,
        strength=form.strength,
        partial_images=form.partial_images if form.stream else None,
        lora=lora_specs(form.lora),
    )
    return replace(params, image=image, mask=mask)
