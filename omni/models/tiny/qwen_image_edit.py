"""A tiny Qwen-Image-Edit shaped ``QwenImageEditPipeline``, built on disk with random weights.

The tiny Qwen-Image modules (omni.models.tiny.qwen_image) plus the ``processor`` the edit
pipeline feeds the Qwen2.5-VL encoder with: the Qwen2 tokenizer and a ``Qwen2VLImageProcessor``
whose pixel budget (``max_pixels``) is small, so the reference image adds few vision tokens to
the prompt. The tokenizer's merges are also learned on the edit pipeline's own prompt template.
The directory is laid out as diffusers saves the real model (``model_index.json`` names
``transformers.Qwen2VLProcessor``).
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from omni.models.qwen_vl_processor import PROCESSOR_FOLDER, ImageQwen2VLProcessor
from omni.models.tiny.common import _save
from omni.models.tiny.qwen_image import (
    TINY_QWEN_IMAGE_DEFAULTS,
    _scheduler,
    _text_encoder,
    _transformer,
    _vae,
    build_qwen_tokenizer,
)

__all__ = ["build_tiny_qwen_image_edit"]

# QwenImageEditPipeline's prompt template without the prompt (see TEMPLATE_TEXT).
EDIT_TEMPLATE_TEXT = (
    "system\nDescribe the key features of the input image (color, shape, size, texture, "
    "objects, background), then explain how the user's text instruction should alter or modify "
    "the image. Generate a new image that meets the user's requirements while maintaining "
    "consistency with the original input where appropriate.\nuser\nassistant\n"
)
# Vision patches of 14 pixels merged 2x2: at most 4x4 image tokens in the prompt.
VISION_MAX_PIXELS = 112 * 112
VISION_MIN_PIXELS = 56 * 56


def _processor(tokenizer) -> ImageQwen2VLProcessor:
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=VISION_MIN_PIXELS,
        max_pixels=VISION_MAX_PIXELS,
        size={"shortest_edge": VISION_MIN_PIXELS, "longest_edge": VISION_MAX_PIXELS},
    )
    return ImageQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _as_published(path: Path) -> None:
    """Name transformers' Qwen2VLProcessor where the image-only stand-in was saved."""
    index_path = path / "model_index.json"
    index = json.loads(index_path.read_text())
    index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    config_path = path / PROCESSOR_FOLDER / "processor_config.json"
    config = json.loads(config_path.read_text())
    config["processor_class"] = "Qwen2VLProcessor"
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def build_tiny_qwen_image_edit(path: Path, seed: int = 0, plus: bool = False) -> Path:
    """Write a complete ``QwenImageEditPipeline`` directory to ``path`` and return ``path``;
    with ``plus`` the same modules as a ``QwenImageEditPlusPipeline`` (several images)."""
    tokenizer = build_qwen_tokenizer(EDIT_TEMPLATE_TEXT)
    pipeline_class = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipeline = pipeline_class(
        scheduler=_scheduler(),
        vae=_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        processor=_processor(tokenizer),
        transformer=_transformer(seed),
    )
    _save(pipeline, path, TINY_QWEN_IMAGE_DEFAULTS)
    _as_published(Path(path))
    return Path(path)
