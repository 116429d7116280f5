"""GET /v1/models' entry for the served model: OpenAI's fields, then what a client (the
playground page) needs to build a form for it: kind, defaults, sizes and their bounds."""

from __future__ import annotations

import math

from omni.engine import AsyncEngine
from omni.http.schemas import ModelCard, ModelDefaults

# Suggested sizes: the default's area at these aspect ratios, at half, equal and twice the side.
ASPECTS = ((1, 1), (4, 3), (3, 4), (16, 9), (9, 16))
SIDE_SCALES = (0.5, 1.0, 2.0)


def model_card(engine: AsyncEngine, created: int) -> ModelCard:
    card = ModelCard(id=engine.config.name, created=created)
    if not engine.is_ready:  # loading, or failed to load: /health says which
        return card
    info, defaults = engine.info, engine.defaults
    card.kind = info.kind
    card.defaults = ModelDefaults(
        size=f"{info.default_width}x{info.default_height}",
        num_inference_steps=defaults.num_inference_steps,
        guidance_scale=defaults.guidance_scale,
        num_frames=defaults.num_frames,
        fps=defaults.fps,
    )
    frames = defaults.num_frames or 1
    max_pixels = engine.config.max_output_pixels
    card.sizes = [
        f"{width}x{height}"
        for width, height in suggested_sizes(
            (info.default_width, info.default_height), info.size_multiple, info.max_side
        )
        if max_pixels is None or width * height * frames <= max_pixels
    ]
    card.size_multiple = info.size_multiple
    card.max_side = info.max_side
    card.takes_image = info.takes_image
    card.can_edit = info.can_edit
    return card


def suggested_sizes(
    default: tuple[int, int], multiple: int, max_side: int
) -> list[tuple[int, int]]:
    """The default first, then sizes around its area at common aspect ratios, smallest first."""
    area = default[0] * default[1]
    found: set[tuple[int, int]] = set()
    for scale in SIDE_SCALES:
        for aspect_w, aspect_h in ASPECTS:
            width = math.sqrt(area * aspect_w / aspect_h) * scale
            height = width * aspect_h / aspect_w
            size = (round_to(width, multiple), round_to(height, multiple))
            if all(multiple <= side <= max_side for side in size):
                found.add(size)
    found.discard(default)
    return [default, *sorted(found, key=lambda size: (size[0] * size[1], size))]


def round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)
