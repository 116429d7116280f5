"""Wan's request rules as plain functions: frame counts, side rounding, the sampling schedule
it ships, which expert runs a step and at what guidance."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from omni.errors import InvalidRequestError
from omni.request import GenerationParams

HIGH_NOISE, LOW_NOISE = 0, 1


def valid_num_frames(num_frames: int, temporal_compression: int = 4) -> int:
    """The frame count a Wan model generates for `num_frames`: the nearest 4k+1, at least 1.

    The VAE keeps the first frame and packs each further 4 frames into one latent frame, so
    counts are 1, 5, 9, ... A count of 4k+3 is as near to 4k+1 as to 4k+5 and rounds down,
    as WanPipeline does; counts below 1 become 1. For example 80 -> 81, 79 -> 77, 2 -> 1.
    """
    return max(1, num_frames // temporal_compression * temporal_compression + 1)


def nearest_multiple(value: int | None, multiple: int) -> int | None:
    """Video sides round like frame counts: to the nearest size the model makes, half up.

    So the seed's 854x480 becomes 848x480 (the job record reports the size made); images keep
    their exact-size rule and refuse such sizes instead.
    """
    if value is None or value < 1:
        return value
    return max(multiple, (value + multiple // 2) // multiple * multiple)


def shipped_shift(scheduler_config: dict[str, Any]) -> float:
    """The static shift Wan's shipped scheduler samples with: a request's flow_shift default."""
    if scheduler_config.get("use_dynamic_shifting"):
        raise NotImplementedError("Wan with a dynamically shifted schedule is not supported")
    return scheduler_config.get("shift", scheduler_config.get("flow_shift", 1.0))


def guidance_for(params: GenerationParams, expert: int) -> float | None:
    """The CFG scale of the expert's steps; None when that scale (1 or below) turns CFG off."""
    scale = params.guidance_scale if expert == HIGH_NOISE else params.guidance_scale_2
    return scale if scale is not None and scale > 1.0 else None


def first(*values: Any) -> Any:
    """The first value that is not None: a request's field, then the defaults in order."""
    return next((value for value in values if value is not None), None)


def check_range(field: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InvalidRequestError(
            f"{field} must be between {low:g} and {high:g}, got {value}", param=field
        )


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] to uint8, rounded the way diffusers makes PIL images."""
    return (frames * 255).round().astype(np.uint8)
