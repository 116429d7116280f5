"""`stream: true` on the Images API: Server-Sent Events as OpenAI's Images API sends them.

`partial_images` previews (`<kind>.partial_image`, indexed 0, 1, ...) as the engine decodes them,
then one `<kind>.completed` with the image and its `usage`; `kind` is `image_generation` or
`image_edit`. The answer starts with the first denoising step, so anything refused before
(a bad field, a full queue, a failed prompt encode) is an ordinary JSON error. A failure after
that is an `error` event (`{"type": "error", "error": {...}}`, which the openai SDK raises as an
APIError) and the stream ends. A client that goes away ends the handler, which aborts its
request in the engine.

As OpenAI does, a stream carries one image: `n` above 1 with `stream` is refused (400).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import aclosing, suppress
from typing import Literal

import msgspec
from aiohttp import web

from omni.engine import AsyncEngine, Finished, Preview
from omni.http.encoding import as_image, encode_image
from omni.http.errors import ApiError, ErrorInfo, to_api_error
from omni.http.schemas import OutputFormat
from omni.request import GenerationParams

logger = logging.getLogger(__name__)

StreamKind = Literal["image_generation", "image_edit"]
# The values OpenAI's events may carry; a request's own is echoed when it is one of them.
QUALITIES = ("low", "medium", "high", "xhigh", "max", "auto")
BACKGROUNDS = ("transparent", "opaque", "auto")


class InputTokensDetails(msgspec.Struct):
    image_tokens: int
    text_tokens: int


class Usage(msgspec.Struct):
    """The denoiser's tokens: text (as the family pads it) and latent image patches."""

    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    total_tokens: int


class PartialImageEvent(msgspec.Struct):
    type: str
    b64_json: str
    partial_image_index: int
    created_at: int
    size: str
    quality: str
    background: str
    output_format: OutputFormat


class CompletedEvent(msgspec.Struct):
    type: str
    b64_json: str
    created_at: int
    size: str
    quality: str
    background: str
    output_format: OutputFormat
    usage: Usage


class ErrorEvent(msgspec.Struct):
    error: ErrorInfo
    type: str = "error"


def check_stream(stream: bool | None, n: int | None) -> None:
    if stream and (n or 1) > 1:
        raise ApiError(
            400,
            f"streaming is only supported with n=1, got n={n}: send n=1 or stream false",
            code="invalid_value",
            param="n",
        )


class ImageStream:
    """One streamed request's answer: the event fields every event repeats, and the writer."""

    def __init__(
        self,
        kind: StreamKind,
        output_format: OutputFormat,
        quality: str | None,
        background: str | None,
    ) -> None:
        self.kind = kind
        self.output_format = output_format
        self.quality = quality if quality in QUALITIES else "auto"
        self.background = background if background in BACKGROUNDS else "auto"
        self.response: web.StreamResponse | None = None
        self.num_partials = 0

    async def run(
        self, request: web.Request, engine: AsyncEngine, params: GenerationParams
    ) -> web.StreamResponse:
        """Follow the request in the engine and send its events; raises (a JSON error) only
        before the first event."""
        try:
            async with aclosing(engine.stream(params)) as events:
                async for event in events:
                    if self.response is None:
                        self.response = await start_events(request)
                    if isinstance(event, Preview):
                        await self.send_partial(event)
                    elif isinstance(event, Finished):
                        await self.send_completed(event, engine.info.size_multiple, params)
        except ConnectionError:  # the client left; leaving the loop aborted its request
            return self.response
        except Exception as exc:
            if self.response is None:
                raise
            await self.send_error(to_api_error(request, exc))
        with suppress(ConnectionError):
            await self.response.write_eof()
        return self.response

    async def send_partial(self, preview: Preview) -> None:
        image = as_image(preview.output)
        event = PartialImageEvent(
            type=f"{self.kind}.partial_image",
            b64_json=await self.encode(image),
            partial_image_index=self.num_partials,
            created_at=int(time.time()),
            size=f"{image.width}x{image.height}",
            quality=self.quality,
            background=self.background,
            output_format=self.output_format,
        )
        self.num_partials += 1
        await self.send(event.type, event)

    async def send_completed(
        self, finished: Finished, size_multiple: int, params: GenerationParams
    ) -> None:
        resolved = finished.params
        image_tokens = (resolved.width // size_multiple) * (resolved.height // size_multiple)
        text_tokens = max(0, finished.tokens_per_row - image_tokens)
        input_image_tokens = image_tokens if params.image is not None else 0
        usage = Usage(
            input_tokens=text_tokens + input_image_tokens,
            input_tokens_details=InputTokensDetails(input_image_tokens, text_tokens),
            output_tokens=image_tokens,
            total_tokens=text_tokens + input_image_tokens + image_tokens,
        )
        event = CompletedEvent(
            type=f"{self.kind}.completed",
            b64_json=await self.encode(finished.output),
            created_at=int(time.time()),
            size=f"{resolved.width}x{resolved.height}",
            quality=self.quality,
            background=self.background,
            output_format=self.output_format,
            usage=usage,
        )
        await self.send(event.type, event)

    async def send_error(self, error: ApiError) -> None:
        try:
            await self.send("error", ErrorEvent(error.body.error))
        except ConnectionError:
            logger.info("the client left before its stream's error event: %s", error.message)

    async def encode(self, output: object) -> str:
        image = as_image(output)
        encoded = await asyncio.to_thread(encode_image, image, self.output_format)
        return base64.b64encode(encoded).decode("ascii")

    async def send(self, name: str, data: msgspec.Struct) -> None:
        payload = b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"
        await self.response.write(payload)


async def start_events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response
