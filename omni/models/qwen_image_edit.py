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
and width. QwenImageEditPlusPipeline models (several images) are omni.models.qwen_image_edit_plus.

Rows of an edit and of a generation of the same size share the engine step but not one
transformer call: QwenImageTransformer2DModel takes one set of image shapes (and so one RoPE
table) per call, so `forward` runs each reference layout (`pad_group`) as a call of its own, and
the scheduler weighs padding only within a group.
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

from omni.models.image_family import TextCond
from omni.models.qwen_image import QwenImageAdapter
from omni.models.qwen_vl_processor import load_processor
from omni.request import GenerationParams, Request

REFERENCE_AREA = 1024 * 1024  # QwenImageEditPipeline's calculate_dimensions target
IMAGE_PAD = "<|image_pad|>"


@dataclass(slots=True)
class QwenEditCond(TextCond):
    """The prompt's (and negative prompt's) embeddings read with the images, and the reference
    images' packed latents with each one's (frames, token rows, token columns)."""

    image_tokens: torch.Tensor | None = None
    image_shapes: list[tuple[int, int, int]] | None = None


class QwenImageEditAdapter(QwenImageAdapter):
    supported_fields = QwenImageAdapter.supported_fields | {"image"}
    can_edit = True
    edit_pipeline_class: Any = QwenImageEditPipeline

    def _load_pipeline(self, model_dir: Path, dtype: torch.dtype) -> Any:
        """The edit pipeline as `edit_pipe`; `pipe` is QwenImagePipeline over the same modules,
        which serves requests without an image and everything the two pipelines share."""
        self.edit_pipe = self.edit_pipeline_class.from_pretrained(
            model_dir, processor=load_processor(model_dir), dtype=dtype
        )
        components = {k: v for k, v in self.edit_pipe.components.items() if k != "processor"}
        return QwenImagePipeline(**components)

    def _setup(self) -> None:
        super()._setup()
        self.edit_pipe.to(self.device)

    # Sizes -------------------------------------------------------------------------------------

    @staticmethod
    def reference_size(image: Image.Image, area: int = REFERENCE_AREA) -> tuple[int, int]:
        """(height, width) of the pipeline's calculated size for the image: about `area` pixels
        at its aspect ratio, sides multiples of 32."""
        width, height = calculate_dimensions(area, image.width / image.height)[:2]
        return height, width

    def references(self, params: GenerationParams) -> list[Image.Image]:
        """The images an edit reads (one for QwenImageEditPipeline)."""
        return [params.image]

    def _vae_sizes(self, params: GenerationParams) -> list[tuple[int, int]]:
        """(height, width) each reference is VAE-encoded at."""
        return [self.reference_size(image) for image in self.references(params)]

    def _condition_sizes(self, params: GenerationParams) -> list[tuple[int, int]]:
        """(height, width) each reference is read at by the vision encoder."""
        return self._vae_sizes(params)

    def pad_group(self, params: GenerationParams) -> Hashable:
        """Edits of the same reference shapes share transformer calls; text-to-image rows their
        own."""
        if params.image is None:
            return None
        scale = self.vae_scale_factor * self.patch_size
        return tuple((1, h // scale, w // scale) for h, w in self._vae_sizes(params))

    def tokens_per_row(self, params: GenerationParams) -> int:
        tokens = super().tokens_per_row(params)
        if params.image is None:
            return tokens
        return tokens + sum(rows * columns for _, rows, columns in self.pad_group(params))

    def _text_tokens(self, params: GenerationParams) -> int:
        if params.image is None:
            return super()._text_tokens(params)
        sizes = self._condition_sizes(params)
        vision = sum(self._vision_tokens(height, width) for height, width in sizes)
        pipe = self.edit_pipe
        lengths = [
            len(self.counter.encode(self._templated(text, len(sizes))).ids)
            for text in self._row_texts(params)
        ]
        # Each image's one pad token becomes its vision tokens; the template's head is dropped.
        return max(lengths) - len(sizes) + vision - pipe.prompt_template_encode_start_idx

    def _templated(self, text: str, num_images: int) -> str:
        return self.edit_pipe.prompt_template_encode.format(text)

    def _vision_tokens(self, height: int, width: int) -> int:
        """The image pad tokens the processor puts in the prompt for an image of that size."""
        processor = self.edit_pipe.processor.image_processor
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
        """As the pipeline: the images into the prompts, their latents as the references."""
        params = request.params
        prompt_images, vae_images = self._edit_inputs(params)
        texts = self._row_texts(params)
        cond = QwenEditCond(*(self._encode_with_image(text, prompt_images) for text in texts))
        tokens, cond.image_shapes = [], []
        for image in vae_images:
            image = image.to(self.device, cond.prompt_embeds.dtype)
            latents = self.edit_pipe._encode_vae_image(image, generator=None)
            _, channels, _, rows, columns = latents.shape
            tokens.append(QwenImageEditPipeline._pack_latents(latents, 1, channels, rows, columns))
            cond.image_shapes.append((1, rows // 2, columns // 2))
        cond.image_tokens = torch.cat(tokens, dim=1)
        request.cond = cond
        request.latents = self._initial_latents(params, cond).to(self.device)
        self.start_sampling(request)

    def _edit_inputs(self, params: GenerationParams) -> tuple[Any, list[torch.Tensor]]:
        """(what the pipeline hands encode_prompt as `image`, the VAE inputs [1, 3, 1, H, W]):
        QwenImageEditPipeline resizes the image once and uses it for both."""
        (height, width), processor = self._vae_sizes(params)[0], self.edit_pipe.image_processor
        prompt_image = processor.resize(params.image, height, width)
        return prompt_image, [processor.preprocess(prompt_image, height, width).unsqueeze(2)]

    def _encode_with_image(self, text: str, image: Any) -> torch.Tensor:
        """One text read with the image, alone (no padding), as the pipeline encodes a prompt."""
        embeds, _ = self.edit_pipe.encode_prompt(prompt=[text], image=image, device=self.device)
        return embeds

    # Denoising ---------------------------------------------------------------------------------

    def _row_tokens(self, request: Request) -> torch.Tensor:
        reference = getattr(request.cond, "image_tokens", None)
        if reference is None:
            return request.latents
        return torch.cat([request.latents, reference], dim=1)

    def _img_shapes(self, request: Request) -> list[tuple[int, int, int]]:
        shapes = super()._img_shapes(request)
        return [*shapes, *getattr(request.cond, "image_shapes", ())]


__all__ = ["QwenEditCond", "QwenImageEditAdapter"]
