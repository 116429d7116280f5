"""Still previews of a finished video: a thumbnail and a spritesheet, as OpenAI's Videos API
serves them next to the MP4 (`GET /v1/videos/{id}/content?variant=...`).

They are made once, from the generated frames still in memory when a job completes, and kept
with its MP4: no download ever decodes the video again, and a restart keeps them.

Layout of the spritesheet: at most SPRITE_FRAMES frames, evenly spaced from the first to the
last, in row-major order on a grid of ceil(sqrt(n)) columns; every tile is one frame scaled
(aspect kept) so that its longer side is at most SPRITE_TILE_PX, with no gaps between tiles.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

THUMBNAIL_CONTENT_TYPE = "image/webp"
SPRITESHEET_CONTENT_TYPE = "image/jpeg"
SPRITE_FRAMES = 16
SPRITE_TILE_PX = 256
WEBP_QUALITY = 90
JPEG_QUALITY = 85


def encode_previews(frames: np.ndarray) -> dict[str, bytes]:
    """Both previews of uint8 frames [F, H, W, 3], by the variant name that serves them."""
    return {"thumbnail": encode_thumbnail(frames), "spritesheet": encode_spritesheet(frames)}


def encode_thumbnail(frames: np.ndarray) -> bytes:
    """The first frame at the video's own size, as WebP."""
    buffer = io.BytesIO()
    Image.fromarray(frames[0]).save(buffer, format="WEBP", quality=WEBP_QUALITY)
    return buffer.getvalue()


def sprite_indices(frame_count: int) -> list[int]:
    """Up to SPRITE_FRAMES distinct frame indices, evenly spaced, first and last included."""
    count = min(frame_count, SPRITE_FRAMES)
    if count == 1:
        return [0]
    return [round(i * (frame_count - 1) / (count - 1)) for i in range(count)]


def tile_size(height: int, width: int) -> tuple[int, int]:
    """(width, height) of one tile: the frame, shrunk (never grown) to SPRITE_TILE_PX."""
    scale = min(1.0, SPRITE_TILE_PX / max(height, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_spritesheet(frames: np.ndarray) -> bytes:
    """A JPEG grid of evenly spaced frames (see the module docstring for the layout)."""
    indices = sprite_indices(len(frames))
    columns = math.ceil(math.sqrt(len(indices)))
    rows = math.ceil(len(indices) / columns)
    width, height = tile_size(frames.shape[1], frames.shape[2])
    sheet = Image.new("RGB", (columns * width, rows * height))
    for position, index in enumerate(indices):
        tile = Image.fromarray(frames[index]).resize((width, height), Image.Resampling.BILINEAR)
        sheet.paste(tile, ((position % columns) * width, (position // columns) * height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
