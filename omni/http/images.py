"""POST /v1/images/generations: `n` images are `n` engine requests that batch together."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Sequence
from dataclasses import replace

from aiohttp import web

from omni.engine import Finished
from omni.http.body import read_json
from omni.http.encoding import as_image, encode_image
from omni.http.errors import ApiError
from omni.http.image_stream import ImageStream, check_stream
from omni.http.schemas import (
    ImageData,
    ImageGenerationRequest,
    ImageGenerationResponse,
    cache_fields,
    json_response,
    sampling_fields,
)
from omni.http.state import ENGINE
from omni.limits import MAX_SEED
from omni.lora.spec import specs_of
from omni.request import GenerationParams

SIZE = re.compile(r"^\s*(?P<width>[0-9]{1,9})\s*[xX]\s*(?P<height>[0-9]{1,9})\s*$")


async def create_images(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    body = await read_json(request, ImageGenerationRequest)
    check_model(body.model, engine.config.name)
    check_seeds(body.seed, body.n or 1)
    check_stream(body.stream, body.n)
    params = generation_params(body, is_video=engine.info.kind == "video")
    await engine.validate(params)  # refuse a size or field the model cannot serve before any work
    if body.stream:
        stream = ImageStream(
            "image_generation", body.output_format or "png", body.quality, body.background
        )
        return await stream.run(request, engine, params)
    finished = await engine.generate_many(seeded(params, body.n or 1))
    return await images_response(finished, body.output_format or "png")


async def images_response(finished: Sequence[Finished], output_format: str) -> web.Response:
    """The Images API's answer for finished requests (generations and edits alike)."""
    encoded = await asyncio.to_thread(encode_outputs, [f.output for f in finished], output_format)
    resolved = finished[0].params
    response = ImageGenerationResponse(
        created=int(time.time()),
        data=[ImageData(base64.b64encode(image).decode("ascii")) for image in encoded],
        size=f"{resolved.width}x{resolved.height}",
        output_format=output_format,
    )
    return json_response(response, headers=timing_headers(finished))


def check_model(requested: str | None, served: str) -> None:
    if requested is not None and requested != served:
        raise ApiError(
            400,
            f"model {requested!r} is not served here; this server serves {served!r}",
            code="model_not_found",
            param="model",
        )


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """(width, height) from "WIDTHxHEIGHT"; (None, None) leaves the model's default."""
    if size is None:
        return None, None
    match = SIZE.match(size)
    if match is None:
        raise ApiError(
            400,
            f"Invalid size format: {size!r}. Expected format: 'WIDTHxHEIGHT' (e.g., '1024x1024').",
            code="invalid_size",
            param="size",
        )
    width, height = int(match["width"]), int(match["height"])
    if width < 1 or height < 1:
        raise ApiError(
            400,
            f"size {size!r} must have a positive width and height",
            code="invalid_size",
            param="size",
        )
    return width, height


def generation_params(body: ImageGenerationRequest, is_video: bool) -> GenerationParams:
    """Only what the client sent; None leaves the model's default. A video model makes one frame."""
    width, height = parse_size(body.size)
    cache, cache_threshold = cache_fields(body.cache)
    return GenerationParams(
        **sampling_fields(body),
        width=width,
        height=height,
        cache=cache,
        cache_threshold=cache_threshold,
        num_frames=1 if is_video else None,
        partial_images=body.partial_images if body.stream else None,
        lora=specs_of(body.lora),
    )


def check_seeds(seed: int | None, n: int) -> None:
    """Image i uses seed + i (see `seeded`), and every one of those must be a valid seed."""
    if seed is not None and seed + n - 1 > MAX_SEED:
        raise ApiError(
            400,
            f"seed {seed} with n={n} would use seeds up to {seed + n - 1}, past the largest "
            f"seed {MAX_SEED}: send a seed of at most {MAX_SEED - n + 1}",
            code="invalid_seed",
            param="seed",
        )


def seeded(params: GenerationParams, n: int) -> list[GenerationParams]:
    """Image i uses seed + i, so each image of a seeded request can be made again alone."""
    if params.seed is None:
        return [params] * n
    return [replace(params, seed=params.seed + i) for i in range(n)]


def encode_outputs(outputs: list[object], output_format: str) -> list[bytes]:
    return [encode_image(as_image(output), output_format) for output in outputs]


def timing_headers(finished: Sequence[Finished]) -> dict[str, str]:
    headers = {
        "x-inference-time-s": f"{max(f.inference_time_s for f in finished):.4f}",
        "x-queue-time-s": f"{max(f.queue_time_s for f in finished):.4f}",
    }
    return headers | cache_headers(finished)


def cache_headers(finished: Sequence[Finished]) -> dict[str, str]:
    """x-cache-skipped-steps: the steps a step cache skipped, one number per output."""
    if all(f.cache_skipped_steps is None for f in finished):
        return {}
    return {"x-cache-skipped-steps": ",".join(str(f.cache_skipped_steps or 0) for f in finished)}
