"""FLUX family: FluxTransformer2DModel over packed 2x2 latent patches, CLIP + T5 text encoders."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import FluxPipeline

from omni.flow import (
    check_scheduler_config,
    flow_sigmas,
    linear_sigmas,
    model_timesteps,
)
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.request import GenerationParams, Request

MAX_SEQUENCE_LENGTH = 512


@dataclass(slots=True)
class FluxCond:
    prompt_embeds: torch.Tensor  # [1, text_len, joint_attention_dim]
    pooled: torch.Tensor  # [1, pooled_projection_dim]
    negative_embeds: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None


def uses_true_cfg(params: GenerationParams) -> bool:
    """diffusers' rule: real CFG needs both a negative prompt and true_cfg_scale above 1."""
    return params.negative_prompt is not None and (params.true_cfg_scale or 1.0) > 1.0


class FluxAdapter(FamilyAdapter):
    kind: ClassVar = "image"
    supported_fields: ClassVar = frozenset(
        {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_inference_steps",
            "guidance_scale",
            "true_cfg_scale",
            "seed",
        }
    )

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = FluxPipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.scheduler_config = dict(self.pipe.scheduler.config)
        check_scheduler_config(self.scheduler_config)
        self.vae_scale_factor = self.pipe.vae_scale_factor
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer_2.model_max_length)
        self.has_guidance_embeds = bool(self.pipe.transformer.config.guidance_embeds)
        default_side = self.pipe.default_sample_size * self.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir,
            width=default_side,
            height=default_side,
            num_inference_steps=28,
            guidance_scale=3.5,
        )
        self._image_ids: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.vae_scale_factor * 2,
            max_side=4096,
        )

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=d.guidance_scale
            if params.guidance_scale is None
            else params.guidance_scale,
            true_cfg_scale=1.0 if params.true_cfg_scale is None else params.true_cfg_scale,
        )

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        key = ("flux", params.height, params.width)
        return (key,) * params.num_inference_steps, 2 if uses_true_cfg(params) else 1

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        return params.height // self.vae_scale_factor, params.width // self.vae_scale_factor

    def prepare(self, requests: list[Request]) -> None:
        negatives = [r for r in requests if uses_true_cfg(r.params)]
        prompts = [r.params.prompt for r in requests] + [
            r.params.negative_prompt for r in negatives
        ]
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        num_channels = self.pipe.transformer.config.in_channels // 4
        for index, request in enumerate(requests):
            request.cond = FluxCond(embeds[index : index + 1], pooled[index : index + 1])
            height, width = self._latent_size(request.params)
            noise = seeded_noise(
                (1, num_channels, height, width), request.params.seed, embeds.dtype
            )
            request.latents = FluxPipeline._pack_latents(noise, 1, num_channels, height, width).to(
                self.device
            )
            request.sigmas = flow_sigmas(
                linear_sigmas(request.num_steps),
                self.scheduler_config,
                image_seq_len=request.latents.shape[1],
            ).to(self.device)
        for offset, request in enumerate(negatives, start=len(requests)):
            request.cond.negative_embeds = embeds[offset : offset + 1]
            request.cond.negative_pooled = pooled[offset : offset + 1]

    def cfg_scale(self, request: Request) -> float | None:
        return request.params.true_cfg_scale if uses_true_cfg(request.params) else None

    def forward(self, rows: list[Row]) -> torch.Tensor:
        embeds, pooled = [], []
        for row in rows:
            cond = row.request.cond
            embeds.append(cond.negative_embeds if row.uncond else cond.prompt_embeds)
            pooled.append(cond.negative_pooled if row.uncond else cond.pooled)
        latents = torch.cat([r.request.latents for r in rows])
        sigmas = torch.stack([r.request.sigmas[r.request.step_index] for r in rows])
        guidance = None
        if self.has_guidance_embeds:
            scales = [r.request.params.guidance_scale for r in rows]
            guidance = torch.tensor(scales, dtype=torch.float32, device=self.device)
        return self.pipe.transformer(
            hidden_states=latents,
            timestep=model_timesteps(sigmas, latents.dtype),
            guidance=guidance,
            pooled_projections=torch.cat(pooled),
            encoder_hidden_states=torch.cat(embeds),
            txt_ids=self._text_ids(embeds[0].shape[1]),
            img_ids=self._image_ids_for(rows[0].request.params),
            return_dict=False,
        )[0]

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer]

    def _text_ids(self, text_len: int) -> torch.Tensor:
        return torch.zeros(text_len, 3, device=self.device, dtype=self.dtype)

    def _image_ids_for(self, params: GenerationParams) -> torch.Tensor:
        height, width = self._latent_size(params)
        key = (height, width)
        if key not in self._image_ids:
            self._image_ids[key] = FluxPipeline._prepare_latent_image_ids(
                1, height // 2, width // 2, self.device, self.dtype
            )
        return self._image_ids[key]

    def decode(self, requests: list[Request]) -> list[Any]:
        params = requests[0].params
        latents = torch.cat([r.latents for r in requests])
        latents = FluxPipeline._unpack_latents(
            latents, params.height, params.width, self.vae_scale_factor
        )
        vae_config = self.pipe.vae.config
        latents = latents / vae_config.scaling_factor + vae_config.shift_factor
        images = self.pipe.vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(images, output_type="pil")
