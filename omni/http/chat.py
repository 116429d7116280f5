"""POST /v1/chat/completions: an image from the last user message, as a chat answer.

For clients that only speak chat (vLLM-Omni serves images this way): the last user message's
text is the prompt, the generation fields ride at the top level of the body (the `openai` SDK's
`extra_body`), and the answer is one assistant message whose content is a list of `image_url`
parts holding data URLs, one per image. The images are the same requests the Images API makes,
so they batch with every other request.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any, Literal

import msgspec
from aiohttp import web

from omni.http.body import read_json
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
from omni.limits import Guidance, NumImages, Priority, Seed, Steps

IMAGE_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


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


async def create_chat_completion(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    body = await read_json(request, ChatCompletionRequest)
    if body.stream:
        raise ApiError(400, "stream must be false for chat completions here", param="stream")
    check_model(body.model, engine.config.name)
    check_seeds(body.seed, body.n or 1)
    prompt = last_user_prompt(body.messages)
    images_body = ImageGenerationRequest(prompt=prompt, **image_fields(body))  # validated above
    params = generation_params(images_body, is_video=engine.info.kind == "video")
    engine.resolve(params)
    finished = await engine.generate_many(seeded(params, body.n or 1))
    output_format = body.output_format or "png"
    encoded = await asyncio.to_thread(encode_outputs, [f.output for f in finished], output_format)
    media_type = IMAGE_MEDIA_TYPES[output_format]
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


def last_user_prompt(messages: list[ChatMessage]) -> str:
    """The text of the last user message; an image part in it asks for an edit."""
    users = [m for m in messages if m.role == "user"]
    if not users:
        raise ApiError(400, "messages has no user message to draw from", param="messages")
    content = users[-1].content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        if any(part.type == "image_url" for part in content):
            raise ApiError(
                400,
                "an image in the message asks for an edit, which chat completions do not "
                "serve here yet: use /v1/images/edits",
                param="messages",
            )
        unknown = sorted({p.type for p in content} - {"text"})
        if unknown:
            raise ApiError(
                400, f"content part types {', '.join(unknown)} are not served", param="messages"
            )
        text = "\n".join(part.text or "" for part in content)
    if not text.strip():
        raise ApiError(400, "the last user message has no text to draw", param="messages")
    return text


def image_fields(body: ChatCompletionRequest) -> dict[str, Any]:
    """The fields /v1/images/generations takes, as sent (None left out)."""
    names = (
        "n", "size", "output_format", "negative_prompt", "num_inference_steps", "guidance_scale",
        "true_cfg_scale", "seed", "priority", "sampler", "cache",
    )  # fmt: skip
    return {name: getattr(body, name) for name in names if getattr(body, name) is not None}


def data_url(image: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"
