"""The request checks every family shares: prompt, steps, size, seed, priority, previews,
sampler, cache."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from omni.cache import check_cache
from omni.errors import InvalidRequestError
from omni.limits import MAX_PARTIAL_IMAGES, MAX_PRIORITY, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS
from omni.request import GenerationParams

if TYPE_CHECKING:
    from omni.models.base import FamilyAdapter


def check_common(adapter: FamilyAdapter, params: GenerationParams) -> GenerationParams:
    """Raise InvalidRequestError (naming the field) for what no family serves; return the params
    with a random seed and the model's sampler filled in where the client left them out."""
    info = adapter.info
    if not params.prompt or not params.prompt.strip():
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    for name in ("prompt", "negative_prompt"):
        text = getattr(params, name)
        if text is not None and len(text) > MAX_PROMPT_CHARS:
            raise InvalidRequestError(
                f"{name} has {len(text)} characters; at most {MAX_PROMPT_CHARS} are taken "
                "(text encoders read only the first few hundred tokens anyway)",
                param=name,
            )
    steps = params.num_inference_steps
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise InvalidRequestError(
            f"num_inference_steps must be between 1 and {MAX_STEPS}, got {steps}",
            param="num_inference_steps",
        )
    for side in ("width", "height"):
        value = getattr(params, side)
        if value is None:
            continue
        if value < info.size_multiple or value > info.max_side:
            raise InvalidRequestError(
                f"{side} {value} is out of range for {adapter.name}: "
                f"{info.size_multiple} to {info.max_side}",
                param="size",
            )
        if value % info.size_multiple:
            raise InvalidRequestError(
                f"{side} {value} is not a multiple of {info.size_multiple}, "
                f"which {adapter.name} needs",
                param="size",
            )
    seed = params.seed
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise InvalidRequestError(f"seed must be between 0 and {MAX_SEED}", param="seed")
    priority = params.priority
    if priority is not None and not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequestError(
            f"priority must be between {-MAX_PRIORITY} and {MAX_PRIORITY}", param="priority"
        )
    partial_images = params.partial_images
    if partial_images is not None and not 0 <= partial_images <= MAX_PARTIAL_IMAGES:
        raise InvalidRequestError(
            f"partial_images must be between 0 and {MAX_PARTIAL_IMAGES}, got {partial_images}",
            param="partial_images",
        )
    if params.sampler is not None and params.sampler not in adapter.samplers:
        raise InvalidRequestError(
            f"unknown sampler {params.sampler[:40]!r}; {adapter.name} has "
            + ", ".join(sorted(adapter.samplers)),
            param="sampler",
        )
    cache, cache_threshold = check_cache(params.cache, params.cache_threshold)
    if problem := adapter.cache_problem(cache):
        raise InvalidRequestError(
            f"{adapter.name} cannot use the step cache {cache}: {problem}", param="cache"
        )
    params = replace(params, cache=cache, cache_threshold=cache_threshold)
    if seed is None:
        params = replace(params, seed=secrets.randbelow(2**32))
    return replace(params, sampler=params.sampler or adapter.default_sampler)
