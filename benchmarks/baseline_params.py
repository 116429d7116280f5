"""The baseline server's request body (benchmarks.baseline_server): parsed and checked as omni's
POST /v1/images/generations takes it."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from omni.models.base import ServingDefaults

MAX_IMAGES_PER_REQUEST = 10


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class ImageParams:
    prompt: str
    seed: int
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    true_cfg_scale: float
    negative_prompt: str | None
    n: int

    @property
    def batch_key(self) -> Hashable:
        """Everything but prompt and seed: requests with equal keys can share one call."""
        return (
            self.width,
            self.height,
            self.num_inference_steps,
            self.guidance_scale,
            self.true_cfg_scale,
            self.negative_prompt,
            self.n,
        )


def parse_size(size: Any, defaults: ServingDefaults) -> tuple[int, int]:
    if size is None:
        return defaults.width, defaults.height
    try:
        width, height = (int(side) for side in str(size).lower().split("x"))
    except ValueError:
        raise BadRequest(f"size must be WIDTHxHEIGHT, got {size!r}", "size") from None
    if width < 1 or height < 1:
        raise BadRequest("size must be positive", "size")
    return width, height


def parse_params(body: Any, defaults: ServingDefaults, seed: int) -> ImageParams:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadRequest("prompt must be a non-empty string", "prompt")
    width, height = parse_size(body.get("size"), defaults)

    def field_or(name: str, default: Any, cast: type) -> Any:
        value = body.get(name)
        return cast(default if value is None else value)

    try:
        params = ImageParams(
            prompt=prompt,
            seed=field_or("seed", seed, int),
            width=width,
            height=height,
            num_inference_steps=field_or("num_inference_steps", defaults.num_inference_steps, int),
            guidance_scale=field_or("guidance_scale", defaults.guidance_scale, float),
            true_cfg_scale=field_or("true_cfg_scale", 1.0, float),
            negative_prompt=body.get("negative_prompt"),
            n=field_or("n", 1, int),
        )
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad parameter: {exc}") from None
    if not 1 <= params.n <= MAX_IMAGES_PER_REQUEST:
        raise BadRequest(f"n must be between 1 and {MAX_IMAGES_PER_REQUEST}", "n")
    if params.num_inference_steps < 1:
        raise BadRequest("num_inference_steps must be at least 1", "num_inference_steps")
    return params
