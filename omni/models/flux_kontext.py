"""FLUX.1 Kontext: FLUX whose edits read the input image as reference tokens in the sequence.

As FluxKontextPipeline does, the image is resized to the preferred Kontext resolution nearest
its aspect ratio, VAE-encoded (the distribution's mode: no noise drawn) and packed like the
latents; every row (the unconditional one too) puts those tokens after its latents, at
positions of their own (first axis 1), and the prediction for them is dropped. The denoising
starts from pure noise and the schedule is the text-to-image one, so an edit batches with
generations, and a request without an image is plain FLUX text-to-image.

One difference on purpose: the output is the size the request asks for (the pipeline scales
its height and width to `max_area`, a megapixel by default); comparing with the pipeline means
passing it max_area = width x height.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch
from diffusers import FluxKontextPipeline
from diffusers.pipelines.flux.pipeline_flux_kontext import PREFERRED_KONTEXT_RESOLUTIONS
from PIL import Image

from omni.models.flux import FluxBase
from omni.models.image_family import PooledTextCond
from omni.request import GenerationParams, Request


@dataclass(slots=True)
class KontextCond(PooledTextCond):
    """The prompt's embeddings, and the reference image's packed tokens and positions."""

    image_tokens: torch.Tensor | None = None
    image_ids: torch.Tensor | None = None


class FluxKontextAdapter(FluxBase):
    pipeline_class = FluxKontextPipeline
    cond_class = KontextCond
    supported_fields = FluxBase.supported_fields | {"image"}
    can_edit = True

    def reference_size(self, image: Image.Image) -> tuple[int, int]:
        """(height, width) the pipeline resizes the image to: the preferred resolution nearest
        its aspect ratio, down to the transformer's size multiple."""
        height, width = self.pipe.image_processor.get_default_height_width(image)
        aspect = width / height
        _, width, height = min(
            (abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS
        )
        multiple = self.vae_scale_factor * self.patch_size
        return height // multiple * multiple, width // multiple * multiple

    def tokens_per_row(self, params: GenerationParams) -> int:
        tokens = super().tokens_per_row(params)
        if params.image is None:
            return tokens
        height, width = self.reference_size(params.image)
        pixels_per_token = self.vae_scale_factor * self.patch_size
        return tokens + (height // pixels_per_token) * (width // pixels_per_token)

    def prepare(self, requests: list[Request]) -> None:
        super().prepare(requests)
        for request in requests:
            if request.params.image is not None:
                self._prepare_reference(request)

    def _prepare_reference(self, request: Request) -> None:
        height, width = self.reference_size(request.params.image)
        processor = self.pipe.image_processor
        image = processor.resize(request.params.image, height, width)
        image = processor.preprocess(image, height, width)
        vae = self.pipe.vae
        dtype = request.cond.prompt_embeds.dtype
        latents = vae.encode(image.to(self.device, dtype)).latent_dist.mode()
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        ids = FluxKontextPipeline._prepare_latent_image_ids(
            1, latents.shape[2] // 2, latents.shape[3] // 2, self.device, self.dtype
        )
        ids[..., 0] = 1
        request.cond.image_tokens = self._pack(latents)
        request.cond.image_ids = ids

    def _row_tokens(self, request: Request) -> torch.Tensor:
        reference = request.cond.image_tokens
        if reference is None:
            return request.latents
        return torch.cat([request.latents, reference], dim=1)

    def _row_layout(self, request: Request) -> Hashable:
        reference = request.params.image
        size = None if reference is None else self.reference_size(reference)
        return (self._latent_size(request.params), size)

    def _row_ids(self, request: Request) -> torch.Tensor:
        ids = self._image_ids_for(request.params)
        reference = request.cond.image_ids
        return ids if reference is None else torch.cat([ids, reference])
