"""Media in and out: generated frames to MP4, and the reference images clients send."""

from __future__ import annotations

import base64
import binascii
import io
import json
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from omni.errors import InvalidRequestError

MP4_CONTENT_TYPE = "video/mp4"
# crf 18 is visually lossless for x264; "veryfast" keeps encoding a small share of a request's
# time on CPU while costing only a few percent in file size against the default preset.
X264_OPTIONS = {"crf": "18", "preset": "veryfast"}
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
IMAGE_URL_KEYS = ("image_url", "url", "b64_json", "data")
# Larger than any side a model here generates at, squared: the size is known from the header,
# so a bigger image is refused before its pixels are decoded (a small file can hold many).
MAX_REFERENCE_SIDE = 4096
MAX_REFERENCE_PIXELS = MAX_REFERENCE_SIDE * MAX_REFERENCE_SIDE


class InvalidImageError(InvalidRequestError):
    code = "invalid_image"


def even_frames(frames: np.ndarray) -> np.ndarray:
    """Pad an odd width or height by one column or row copied from the edge.

    yuv420p stores one chroma sample per 2x2 block, so H.264 in 4:2:0 can only carry even sizes.
    Padding keeps every generated pixel (cropping would drop one); the copied edge is invisible.
    """
    _, height, width, _ = frames.shape
    pad_height, pad_width = height % 2, width % 2
    if not pad_height and not pad_width:
        return frames
    return np.pad(frames, ((0, 0), (0, pad_height), (0, pad_width), (0, 0)), mode="edge")


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 (libx264) in yuv420p at `fps` frames per second, from uint8 frames [F, H, W, 3].

    Odd sizes are padded to even ones by `even_frames`.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [frames, height, width, 3], got {frames.shape}")
    if len(frames) == 0:
        raise ValueError("a video needs at least one frame")
    if fps < 1:
        raise ValueError(f"fps must be at least 1, got {fps}")
    frames = np.ascontiguousarray(even_frames(frames))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps), options=X264_OPTIONS)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def read_image(data: bytes, param: str, mode: str = "RGB") -> Image.Image:
    """An image in `mode` (RGB; RGBA keeps a mask's alpha) from PNG, JPEG or WebP bytes, its
    size bounded before its pixels are decoded; InvalidImageError (400) for anything else."""
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        width, height = image.size
        if width * height <= MAX_REFERENCE_PIXELS:
            image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise InvalidImageError(f"{param} could not be read as an image", param) from None
    if width * height > MAX_REFERENCE_PIXELS:
        raise InvalidImageError(
            f"{param} is {width}x{height}: images of at most {MAX_REFERENCE_PIXELS} pixels "
            f"({MAX_REFERENCE_SIDE}x{MAX_REFERENCE_SIDE}) are accepted",
            param,
        )
    if image_format not in IMAGE_FORMATS:
        raise InvalidImageError(
            f"{param} must be a PNG, JPEG or WebP image, got {image_format}", param
        )
    return image.convert(mode)


def read_reference_image(value: str | dict[str, Any], param: str) -> Image.Image:
    """The image in a data URL, bare base64, JSON text of either, or an object holding one
    under `image_url` (text or {"url": ...}), `url`, `b64_json` or `data`."""
    return read_image(reference_bytes(value, param), param)


def reference_bytes(value: str | dict[str, Any], param: str, nested: bool = False) -> bytes:
    if isinstance(value, dict):
        if "file_id" in value:
            raise InvalidImageError(
                f"{param}.file_id is not supported: upload the image or send a data URL", param
            )
        for key in IMAGE_URL_KEYS:
            inner = value.get(key)
            if isinstance(inner, dict) and key == "image_url":
                inner = inner.get("url")
            if isinstance(inner, str):
                return reference_bytes(inner, param, nested=True)
        raise InvalidImageError(f"{param} must hold one of {', '.join(IMAGE_URL_KEYS)}", param)
    text = value.strip()
    if not nested and text.startswith(("{", '"')):
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidImageError(f"{param} is not valid JSON: {exc}", param) from None
        except RecursionError:
            raise InvalidImageError(f"{param} nests too deeply to be read", param) from None
        if not isinstance(decoded, str | dict):
            raise InvalidImageError(f"{param} must be a string or an object", param)
        return reference_bytes(decoded, param, nested=True)
    if text.startswith(("http://", "https://")):
        raise InvalidImageError(
            f"{param}: omni does not download images from URLs; send the image itself "
            "(a file upload, a data URL or base64)",
            param,
        )
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidImageError(f"{param}: only base64 data URLs are supported", param)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImageError(f"{param} is neither a data URL nor base64", param) from None
