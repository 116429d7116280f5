"""FLUX image-to-image and inpainting, as diffusers' FluxImg2ImgPipeline and FluxInpaintPipeline.

An edit is a text-to-image request that starts part way down the full schedule: the image's
VAE latents noised to the start sigma (picked by `strength`, diffusers' get_timesteps), then
only the remaining steps run, so an edit batches with generations under the same key. An
inpainting request also carries a per-request blend: after each update the known region is
re-noised to the next sigma and pasted back outside the mask (omni.engine.runner.advance).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace

import torch
from diffusers.image_processor import VaeImageProcessor

from omni.errors import InvalidRequestError
from omni.request import GenerationParams, Request
from omni.samplers import Schedule

DEFAULT_STRENGTH = 0.6  # FluxImg2ImgPipeline's and FluxInpaintPipeline's default
EDIT_FIELDS = frozenset({"image", "mask", "strength"})


def start_index(num_steps: int, strength: float) -> int:
    """diffusers' get_timesteps: the index in the full schedule an edit starts at."""
    return int(max(num_steps - min(num_steps * strength, num_steps), 0))


@dataclass(slots=True)
class InpaintBlend:
    """What an inpainting request pastes back after each step: its clean image latents, its
    noise and its (packed) mask, 1 where the model repaints."""

    image_latents: torch.Tensor
    noise: torch.Tensor
    mask: torch.Tensor

    def __call__(self, request: Request) -> torch.Tensor:
        """The request's latents after its update at step_index, as FluxInpaintPipeline's loop
        leaves them: the known region at the next sigma (clean after the last step)."""
        known = self.image_latents
        if request.step_index < request.num_steps - 1:
            sigma = request.sigmas[request.step_index + 1].to(known.device, known.dtype)
            known = sigma * self.noise + (1 - sigma) * known
        return (1 - self.mask) * known + self.mask * request.latents


class FluxEditMixin:
    """Image-to-image and inpainting for FluxAdapter (which supplies pipe, _pack, sizes)."""

    def _setup_edits(self) -> None:
        scale = self.vae_scale_factor * 2
        channels = self.pipe.vae.config.latent_channels
        self.edit_processor = VaeImageProcessor(
            vae_scale_factor=scale, vae_latent_channels=channels
        )
        self.mask_processor = VaeImageProcessor(
            vae_scale_factor=scale,
            vae_latent_channels=channels,
            do_normalize=False,
            do_binarize=True,
            do_convert_grayscale=True,
        )

    def resolve_edit(self, params: GenerationParams) -> GenerationParams:
        """An edit's strength (default 0.6) checked: it must leave at least one step to run."""
        if params.image is None:
            if params.mask is not None or params.strength is not None:
                field = "mask" if params.mask is not None else "strength"
                raise InvalidRequestError(f"{field} needs an image to edit", param=field)
            return params
        strength = DEFAULT_STRENGTH if params.strength is None else params.strength
        if not 0.0 <= strength <= 1.0:
            raise InvalidRequestError(
                f"strength must be between 0 and 1, got {strength}", param="strength"
            )
        steps = params.num_inference_steps
        if steps - start_index(steps, strength) < 1:
            raise InvalidRequestError(
                f"strength {strength} with {steps} steps leaves no step to run: raise strength "
                "or num_inference_steps",
                param="strength",
            )
        if params.mask is not None and params.mask.size != params.image.size:
            raise InvalidRequestError(
                f"mask is {params.mask.size[0]}x{params.mask.size[1]} but the image is "
                f"{params.image.size[0]}x{params.image.size[1]}: send them the same size",
                param="mask",
            )
        if strength == 1.0 and params.mask is None:
            # Pure noise at sigma 1: the image cannot show, so this is the seed's text-to-image
            # request (diffusers draws a VAE sample first and so starts from other noise).
            return replace(params, image=None, strength=None)
        return replace(params, strength=strength)

    def edit_plan(self, keys: tuple[Hashable, ...], params: GenerationParams) -> tuple:
        """Only the steps an edit runs: the full schedule's from its start index on."""
        if params.image is None:
            return keys
        return keys[start_index(params.num_inference_steps, params.strength) :]

    def edit_schedule(self, schedule: Schedule, params: GenerationParams) -> Schedule:
        if params.image is None:
            return schedule
        start = start_index(params.num_inference_steps, params.strength)
        return Schedule(schedule.sigmas[start:], schedule.timesteps[start:])

    def prepare_edit(self, request: Request) -> None:
        """The noised image latents as the request's start, and its inpainting blend: the
        pipelines' generator draws the VAE sample first, then the noise."""
        params = request.params
        generator = torch.Generator("cpu").manual_seed(params.seed)
        image = self.edit_processor.preprocess(params.image, params.height, params.width)
        image_latents = self._encode_image(image.to(torch.float32), generator)
        noise = torch.randn(image_latents.shape, generator=generator, dtype=image_latents.dtype)
        noise = self._pack(noise).to(self.device)
        image_latents = self._pack(image_latents.to(self.device))
        sigma = request.sigmas[0].to(self.device, image_latents.dtype)
        request.latents = sigma * noise + (1 - sigma) * image_latents
        if params.mask is not None:
            request.blend = InpaintBlend(image_latents, noise, self._mask_latents(params))

    def _encode_image(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """FluxPipeline's VAE latents of a preprocessed image, sampled with the generator (on
        the CPU, as a CPU generator draws), shifted and scaled."""
        vae = self.pipe.vae
        dist = vae.encode(image.to(self.device, vae.dtype)).latent_dist
        sample = torch.randn(dist.mean.shape, generator=generator, dtype=dist.mean.dtype)
        latents = dist.mean + dist.std * sample.to(dist.mean.device)
        config = vae.config
        latents = (latents - config.shift_factor) * config.scaling_factor
        return latents.to(self.dtype).cpu()

    def _mask_latents(self, params: GenerationParams) -> torch.Tensor:
        """The repaint mask at latent size, over every channel, packed like the latents."""
        mask = self.mask_processor.preprocess(params.mask, params.height, params.width)
        height, width = self._latent_size(params)
        mask = torch.nn.functional.interpolate(mask, size=(height, width))
        mask = mask.to(self.device, self.dtype).repeat(1, self._noise_channels(), 1, 1)
        return self._pack(mask)
