"""POST /v1/chat/completions: an image from the last user message, as a chat answer.

For clients that only speak chat (vLLM-Omni serves images this way): the last user message's
text is the prompt, the generation fields ride at the top level of the body (the `openai` SDK's
`extra_body`), and the answer is one assistant message whose content is a list of `image_url`
parts holding data URLs, one per image. An image part (a data URL) in that message makes it an
edit, as /v1/images/edits. The images are the same requests the Images API makes, so they batch
with every other request.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from dataclasses import replace
from typing import Any, Literal

import msgspec
from aiohttp import web
from PIL import Image

from omni.http.body import read_json
from omni.http.edits import check_can_edit, default_size
from omni.http.encoding import CONTENT_TYPES
from omni.http.errors import ApiError
from omni.http.images import (
    check_model,
    check_seeds,
    encode_outputs,
    generation_params,
    seeded,
    timing_headers,
)
from omni.http.schemas import CacheSpec, ImageGenerationRequest, json_response
from omni.http.state import ENGINE
from omni.limits import Guidance, NumImages, Priority, Seed, Steps, Strength
from omni.media import read_image
from omni.request import GenerationParams


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatCompletionRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Chat's own fields (the sampling ones accepted and ignored: they choose among a language
    model's tokens), then the image fields of /v1/images/generations."""

    messages: list[ChatMessage]
    model: str | None = None
    n: NumImages | None = None
    stream: bool | None = None
    user: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    stop: str | list[str] | None = None
    modalities: list[str] | None = None
    size: str | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    negative_prompt: str | None = None
    num_inference_steps: Steps | None = None
    guidance_scale: Guidance | None = None
    true_cfg_scale: Guidance | None = None
    seed: Seed | None = None
    priority: Priority | None = None
    sampler: str | None = None
    cache: str | CacheSpec | None = None
    strength: Strength | None = None  # an edit's, as /v1/images/edits


async def create_chat_completion(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = await read_json(request, ChatCompletionRequest)
    if body.stream:
        raise ApiError(400, "stream must be false for chat completions here", param="stream")
    check_model(body.model, engine.config.name)
    check_seeds(body.seed, body.n or 1)
    prompt, reference = last_user_message(body.messages)
    images_body = ImageGenerationRequest(prompt=prompt, **image_fields(body))  # validated above
    params = generation_params(images_body, is_video=engine.info.kind == "video")
    if reference is not None:
        check_can_edit(engine.info)
        image = await asyncio.to_thread(read_image, reference, "messages")
        params = as_edit(params, image, body.strength, engine.info.size_multiple)
    elif body.strength is not None:
        raise ApiError(400, "strength applies to an edit: send an image part", param="strength")
    await engine.validate(params)
    finished = await engine.generate_many(seeded(params, body.n or 1))
    output_format = body.output_format or "png"
    encoded = await asyncio.to_thread(encode_outputs, [f.output for f in finished], output_format)
    media_type = CONTENT_TYPES[output_format]
    parts = [
        {"type": "image_url", "image_url": {"url": data_url(image, media_type)}}
        for image in encoded
    ]
    answer = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": engine.config.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": parts},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return json_response(answer, headers=timing_headers(finished))


def last_user_message(messages: list[ChatMessage]) -> tuple[str, bytes | None]:
    """(the text of the last user message, the bytes of its image part if it has one)."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ApiError(400, "messages has no user message to draw from", param="messages")
    content = users[-1].content
    reference = None
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        unknown = sorted({p.type for p in content} - {"text", "image_url"})
        if unknown:
            raise ApiError(
                400, f"content part types {', '.join(unknown)} are not served", param="messages"
            )
        images = [p.image_url for p in content if p.type == "image_url"]
        if len(images) > 1 or (images and images[0] is None):
            raise ApiError(400, "send at most one image part, with an image_url", param="messages")
        reference = decode_data_url(images[0].url) if images else None
        text = "\n".join(part.text or "" for part in content if part.type == "text")
    if not text.strip():
        raise ApiError(400, "the last user message has no text to draw", param="messages")
    return text, reference


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 data URL; omni fetches nothing from the network."""
    header, comma, payload = url.partition(",")
    if not (comma and header.startswith("data:image/") and header.endswith(";base64")):
        raise ApiError(
            400,
            "an image part must be a data URL (data:image/png;base64,...): omni fetches no URLs",
            param="messages",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except ValueError:
        raise ApiError(
            400, "the image part's data URL is not valid base64", param="messages"
        ) from None


def as_edit(
    params: GenerationParams, image: Image.Image, strength: float | None, size_multiple: int
) -> GenerationParams:
    """An edit of `image`; without a size, the image's own, rounded down as /v1/images/edits."""
    width, height = params.width, params.height
    if width is None or height is None:
        width, height = default_size(image, size_multiple)
    return replace(params, image=image, width=width, height=height, strength=strength)


def image_fields(body: ChatCompletionRequest) -> dict[str, Any]:
    """The fields /v1/images/generations takes, as sent (None left out)."""
    names = (
        "n", "size", "output_format", "negative_prompt", "num_inference_steps", "guidance_scale",
        "true_cfg_scale", "seed", "priority", "sampler", "cache",
    )  # fmt: skip
    return {name: getattr(body, name) for name in names if getattr(body, name) is not None}


def data_url(image: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"
