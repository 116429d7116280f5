"""Qwen-Image requests, and the same request through diffusers' own QwenImagePipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import QwenImagePipeline

from omni.request import GenerationParams

LONG_PROMPT = " ".join(["a small orange cat sleeps on a warm wooden table"] * 70)  # > 512 tokens


def qwen_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="a red fox in the snow", width=64, height=64, num_inference_steps=4, seed=0
    )
    return GenerationParams(**{**values, **overrides})


def pipeline_image(model_dir: Path, params: GenerationParams) -> Any:
    """QwenImagePipeline.__call__ as shipped (its own scheduler), with the request's values;
    what the request leaves out keeps the pipeline's own default."""
    pipe = QwenImagePipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    extra: dict[str, Any] = {}
    if params.true_cfg_scale is not None:
        extra["true_cfg_scale"] = params.true_cfg_scale
    return pipe(
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        **extra,
    ).images[0]
