"""Still images as the bytes clients download: PNG, JPEG or WebP."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# Quality 90 keeps JPEG and WebP artefacts hard to see at about a third of PNG's size.
LOSSY_QUALITY = 90


def as_image(output: Any) -> Image.Image:
    """A PIL image from an image adapter's output, or frame 0 of a video adapter's frames."""
    if isinstance(output, Image.Image):
        return output
    frames = np.asarray(output)
    if frames.ndim == 4:
        frames = frames[0]
    if frames.ndim != 3 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels [height, width, 3], got {frames.shape}")
    return Image.fromarray(frames)


def encode_image(image: Image.Image, output_format: str) -> bytes:
    """The image in `output_format` (png | jpeg | webp); the same pixels give the same bytes."""
    if output_format not in CONTENT_TYPES:
        raise ValueError(f"output_format must be one of {', '.join(CONTENT_TYPES)}")
    image = image.convert("RGB")
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=output_format.upper(), quality=LOSSY_QUALITY)
    return buffer.getvalue()
