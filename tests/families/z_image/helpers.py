"""Requests and diffusers' own ZImagePipeline runs to compare the engine with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler, ZImagePipeline
from diffusers.hooks.hooks import CacheContext, _set_cache_context

from omni.request import GenerationParams
from omni.samplers import samplers_for

# Longer than the pipeline's 512 caption tokens once templated: it is cut there, not before.
LONG_PROMPT = " ".join(["a small orange cat sleeps on a warm wooden table near the window"] * 60)


class ArraySigmasUniPC(UniPCMultistepScheduler):
    """UniPC taking the pipeline's sigmas list: diffusers' set_timesteps multiplies the list by a
    float (a TypeError) unless it is an array, so ZImagePipeline cannot run UniPC as shipped."""

    def set_timesteps(self, *args: Any, sigmas: Any = None, **kwargs: Any) -> None:
        sigmas = None if sigmas is None else np.asarray(sigmas)
        super().set_timesteps(*args, sigmas=sigmas, **kwargs)


def z_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(prompt="a red fox in the snow", seed=0)
    return GenerationParams(**{**values, **overrides})


def diffusers_z_image(
    model_dir: Path, params: GenerationParams, cache: Callable[[torch.nn.Module], Any] | None = None
) -> Any:
    """The request through ZImagePipeline.__call__ with its own scheduler (for sampler "unipc",
    UniPC with the config omni derives from the shipped one), its transformer given `cache`."""
    pipe = ZImagePipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if cache is not None:
        cache(pipe.transformer)
        # ZImagePipeline sets no cache context, which diffusers' cache hooks need (its
        # transformer is no CacheMixin): one for this pipe's one run, as many as a step's
        # transformer calls (one, without CFG).
        assert params.guidance_scale == 0
        _set_cache_context(pipe.transformer, CacheContext("cond"))
    if params.sampler == "unipc":
        _, samplers = samplers_for(dict(pipe.scheduler.config))
        pipe.scheduler = ArraySigmasUniPC.from_config(samplers["unipc"].config)
    return pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
    ).images[0]
