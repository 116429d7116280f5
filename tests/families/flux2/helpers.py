"""Requests for the tiny FLUX.2 [klein] model and the same request through diffusers' own
Flux2KleinPipeline.__call__, for comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import Flux2KleinPipeline

from omni.request import GenerationParams
from tests.families.samplers import use_sampler


def klein_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="a red fox in the snow",
        width=64,
        height=64,
        num_inference_steps=4,
        guidance_scale=4.0,
        seed=0,
    )
    return GenerationParams(**{**values, **overrides})


def pipeline_image(model_dir: Path | str, params: GenerationParams) -> Any:
    """Flux2KleinPipeline as shipped (its own scheduler unless the request names another
    sampler), at the text length omni serves with.

    The pipeline always uses the empty prompt as its negative; a request's negative_prompt goes
    in as negative_prompt_embeds, the pipeline's own way to take another one."""
    pipe = use_sampler(Flux2KleinPipeline.from_pretrained(model_dir), params.sampler)
    pipe.set_progress_bar_config(disable=True)
    max_length = min(512, pipe.tokenizer.model_max_length)
    extra: dict[str, Any] = {}
    if params.negative_prompt is not None:
        extra["negative_prompt_embeds"], _ = pipe.encode_prompt(
            params.negative_prompt, max_sequence_length=max_length
        )
    return pipe(
        prompt=params.prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        max_sequence_length=max_length,
        **extra,
    ).images[0]
