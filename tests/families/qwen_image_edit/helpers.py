"""Qwen-Image-Edit requests, and the same edit through diffusers' QwenImageEditPipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import QwenImageEditPipeline, QwenImagePipeline
from PIL import Image

from omni.config import EngineConfig
from omni.http import ServerConfig
from omni.models.qwen_vl_processor import load_processor
from omni.request import GenerationParams
from tests.http.servers import server_thread


def source_image(width: int = 80, height: int = 48) -> Image.Image:
    """A smooth colour ramp with a dark square: not square, so the calculated size matters."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    pixels[height // 4 : height // 2, width // 4 : width // 2] = 20
    return Image.fromarray(pixels.astype(np.uint8))


def edit_params(**overrides: Any) -> GenerationParams:
    values: dict[str, Any] = dict(
        prompt="make the sky red",
        image=source_image(),
        width=64,
        height=32,
        num_inference_steps=3,
        seed=0,
    )
    return GenerationParams(**{**values, **overrides})


def edit_pipeline(model_dir: Path, pipeline_class: Any = QwenImageEditPipeline) -> Any:
    pipe = pipeline_class.from_pretrained(model_dir, processor=load_processor(model_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_to_image(model_dir: Path, params: GenerationParams) -> Any:
    """QwenImagePipeline.__call__ over the edit model's modules (what omni serves without an
    image)."""
    components = edit_pipeline(model_dir).components
    pipe = QwenImagePipeline(**{k: v for k, v in components.items() if k != "processor"})
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=params.prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        generator=torch.Generator("cpu").manual_seed(params.seed),
    ).images[0]


def pipeline_edit(
    model_dir: Path,
    params: GenerationParams,
    pipeline_class: Any = QwenImageEditPipeline,
    pipe: Any = None,
) -> Any:
    """QwenImageEditPipeline.__call__ (or pipeline_class's) as shipped, with height and width
    given so it keeps the requested size; what the request leaves out keeps the pipeline's own
    default. Several images go in as a list. `pipe`: one a test hooks into."""
    pipe = pipe or edit_pipeline(model_dir, pipeline_class)
    extra: dict[str, Any] = {}
    if params.true_cfg_scale is not None:
        extra["true_cfg_scale"] = params.true_cfg_scale
    return pipe(
        image=list(params.image) if isinstance(params.image, tuple) else params.image,
        prompt=params.prompt,
        negative_prompt=params.negative_prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        **extra,
    ).images[0]


def serve(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server thread on a loopback port for the model; yields its URL."""
    engine = EngineConfig(model=str(model_dir), profile_seconds=0)
    storage = tmp_path_factory.mktemp("storage")
    with server_thread(ServerConfig(engine=engine, port=0, storage_path=storage)) as server:
        yield server.url
