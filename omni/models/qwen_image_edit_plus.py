"""Qwen-Image-Edit-2509 and later (QwenImageEditPlusPipeline): an edit reads several images.

Each image is read by the vision encoder at about 384x384 (the prompt names them "Picture 1: ",
"Picture 2: ", ... before the instruction) and VAE-encoded at about a megapixel; the references'
latents follow the row's own latents one after the other, each with its own image shape in the
RoPE. The output size rule is QwenImageEditAdapter's (the request's size; the edits route sends
the last image's own size when the client sends none, where the pipeline would take that
image's calculated megapixel size).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from diffusers import QwenImageEditPlusPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (
    CONDITION_IMAGE_SIZE,
    VAE_IMAGE_SIZE,
)
from PIL import Image

from omni.limits import MAX_EDIT_IMAGES
from omni.models.base import ModelInfo
from omni.models.qwen_image_edit import QwenImageEditAdapter
from omni.request import GenerationParams

PICTURE = "Picture {}: <|vision_start|><|image_pad|><|vision_end|>"  # the pipeline's


class QwenImageEditPlusAdapter(QwenImageEditAdapter):
    edit_pipeline_class = QwenImageEditPlusPipeline

    @property
    def info(self) -> ModelInfo:
        return replace(super().info, max_edit_images=MAX_EDIT_IMAGES)

    def references(self, params: GenerationParams) -> list[Image.Image]:
        image = params.image
        return list(image) if isinstance(image, (list, tuple)) else [image]

    def _vae_sizes(self, params: GenerationParams) -> list[tuple[int, int]]:
        return [self.reference_size(i, VAE_IMAGE_SIZE) for i in self.references(params)]

    def _condition_sizes(self, params: GenerationParams) -> list[tuple[int, int]]:
        return [self.reference_size(i, CONDITION_IMAGE_SIZE) for i in self.references(params)]

    def _templated(self, text: str, num_images: int) -> str:
        pictures = "".join(PICTURE.format(index + 1) for index in range(num_images))
        return self.edit_pipe.prompt_template_encode.format(pictures + text)

    def _edit_inputs(self, params: GenerationParams) -> tuple[Any, list[torch.Tensor]]:
        """As QwenImageEditPlusPipeline: each image resized for the vision encoder, and each
        preprocessed from the original at its VAE size."""
        processor = self.edit_pipe.image_processor
        images = self.references(params)
        conditions = [
            processor.resize(image, height, width)
            for image, (height, width) in zip(images, self._condition_sizes(params), strict=True)
        ]
        vae_inputs = [
            processor.preprocess(image, height, width).unsqueeze(2)
            for image, (height, width) in zip(images, self._vae_sizes(params), strict=True)
        ]
        return conditions, vae_inputs
