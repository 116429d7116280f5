"""Qwen-Image-Edit: Qwen-Image whose edits read the input image twice, as QwenImageEditPipeline
does: through the Qwen2.5-VL encoder (the prompt goes in with the image under the edit prompt
template, so the text embeddings carry vision tokens) and as reference latents after each row's
own latents, with image shapes of their own in the RoPE (the second entry of `img_shapes`).

The reference is the image resized to the pipeline's calculated size: about a megapixel at the
image's aspect ratio, sides multiples of 32; it is VAE-encoded (the distribution's mode: no
noise drawn). Denoising starts from pure noise with the text-to-image schedule (mu from the
output's token count), and true CFG reads the negative prompt encoded with the same image, so an
edit is a text-to-image request with extra tokens and batches with generations step by step.
A request without an image is Qwen-Image text-to-image (QwenImagePipeline's prompt template) on
the edit model's weights.

One difference on purpose: the output is the size the request asks for (the edits route sends
the image's own size, rounded down to 16, when the client sends none); the pipeline's default
output is the calculated megapixel size. Comparing with the pipeline means passing it height
and width.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import QwenImageEditPipeline, QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions
from PIL import Image

from omni.cache import STEP_CACHES
from omni.models.image_family import TextCond
from omni.models.qwen_image import QwenImageAdapter
from omni.models.qwen_vl_processor import load_processor
from omni.request import GenerationParams, Request

REFERENCE_AREA = 1024 * 1024  # QwenImageEditPipeline's calculate_dimensions target
IMAGE_PAD = "<|image_pad|>"


@dataclass(slots=True)
class QwenEditCond(TextCond):
    """The prompt's (and negative prompt's) embeddings read with the image, and the reference
    image's packed latents with its (frames, token rows, token columns)."""

    image_tokens: torch.Tensor | None = None
    image_shape: tuple[int, int, int] | None = None


class QwenImageEditAdapter(QwenImageAdapter):
    supported_fields = QwenImageAdapter.supported_fields | {"image"}
    can_edit = True

    def _load_pipeline(self, model_dir: Path, dtype: torch.dtype) -> Any:
        """The edit pipeline as `edit_pipe`; `pipe` is QwenImagePipeline over the same modules,
        which serves requests without an image and everything the two pipelines share."""
        self.edit_pipe = QwenImageEditPipeline.from_pretrained(
            model_dir, processor=load_processor(model_dir), dtype=dtype
        )
        components = {k: v for k, v in self.edit_pipe.components.items() if k != "processor"}
        return QwenImagePipeline(**components)

    def _setup(self) -> None:
        super()._setup()
        self.edit_pipe.to(self.device)

    def cache_problem(self, kind: str | None) -> str | None:
        if kind in STEP_CACHES:  # their row slicing knows nothing of the reference tokens
            return "step caches are not wired for Qwen-Image-Edit's reference-image tokens"
        return super().cache_problem(kind)

    # Sizes -------------------------------------------------------------------------------------

    @staticmethod
    def reference_size(image: Image.Image) -> tuple[int, int]:
        """(height, width) of the pipeline's calculated size for the image."""
        width, height, _ = calculate_dimensions(REFERENCE_AREA, image.width / image.height)
        return height, width

    def _reference_shape(self, image: Image.Image) -> tuple[int, int, int]:
        height, width = self.reference_size(image)
        scale = self.vae_scale_factor * self.patch_size
        return (1, height // scale, width // scale)

    def tokens_per_row(self, params: GenerationParams) -> int:
        tokens = super().tokens_per_row(params)
        if params.image is None:
            return tokens
        _, rows, columns = self._reference_shape(params.image)
        return tokens + rows * columns

    def _text_length(self, text: str, image: Image.Image | None = None) -> int:
        if image is None:
            return super()._text_length(text)
        pipe = self.edit_pipe
        templated = len(self.counter.encode(pipe.prompt_template_encode.format(text)).ids)
        return templated - 1 + self._vision_tokens(image) - pipe.prompt_template_encode_start_idx

    def _text_tokens(self, params: GenerationParams) -> int:
        texts = self._row_texts(params)
        return max(self._text_length(text, params.image) for text in texts)

    def _vision_tokens(self, image: Image.Image) -> int:
        """The image pad tokens the processor puts in the prompt for the reference image."""
        processor = self.edit_pipe.processor.image_processor
        height, width = self.reference_size(image)
        return processor.get_number_of_image_patches(height, width, {}) // processor.merge_size**2

    # Encoding ----------------------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        plain = [r for r in requests if r.params.image is None]
        if plain:
            super().prepare(plain)
        for request in requests:
            if request.params.image is not None:
                self._prepare_edit(request)

    def _prepare_edit(self, request: Request) -> None:
        """As the pipeline: the resized image into the prompts, its latents as the reference."""
        params = request.params
        height, width = self.reference_size(params.image)
        processor = self.edit_pipe.image_processor
        prompt_image = processor.resize(params.image, height, width)
        texts = self._row_texts(params)
        encoded = [self._encode_with_image(text, prompt_image) for text in texts]
        cond = QwenEditCond(*encoded)
        image = processor.preprocess(prompt_image, height, width).unsqueeze(2)
        image = image.to(self.device, cond.prompt_embeds.dtype)
        latents = self.edit_pipe._encode_vae_image(image, generator=None)
        _, channels, _, rows, columns = latents.shape
        cond.image_tokens = QwenImageEditPipeline._pack_latents(latents, 1, channels, rows, columns)
        cond.image_shape = (1, rows // 2, columns // 2)
        request.cond = cond
        request.latents = self._initial_latents(params, cond).to(self.device)
        self.start_sampling(request)

    def _encode_with_image(self, text: str, image: Image.Image) -> torch.Tensor:
        """One text read with the image, alone (no padding), as the pipeline encodes a prompt."""
        embeds, _ = self.edit_pipe.encode_prompt(prompt=[text], image=image, device=self.device)
        return embeds

    # Denoising ---------------------------------------------------------------------------------

    def pad_group(self, params: GenerationParams) -> Hashable:
        """Edits of one reference shape share transformer calls; text-to-image rows their own."""
        return None if params.image is None else self._reference_shape(params.image)

    def _row_tokens(self, request: Request) -> torch.Tensor:
        reference = getattr(request.cond, "image_tokens", None)
        if reference is None:
            return request.latents
        return torch.cat([request.latents, reference], dim=1)

    def _img_shapes(self, request: Request) -> list[tuple[int, int, int]]:
        shapes = super()._img_shapes(request)
        reference = getattr(request.cond, "image_shape", None)
        return shapes if reference is None else [*shapes, reference]


__all__ = ["QwenEditCond", "QwenImageEditAdapter"]
