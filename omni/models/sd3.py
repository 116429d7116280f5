"""Stable Diffusion 3 / 3.5 family: StableDiffusion3Pipeline (SD3.5 Large and Medium).

Text. Two CLIP encoders give a pooled projection each (concatenated) and their penultimate
hidden states (concatenated, zero-padded to T5's width), followed by T5's states: a text
sequence of a fixed 77 + 256 tokens, so every prompt fits one forward without masks. Encoding
goes through the pipeline's own `encode_prompt`, one text at a time in the cache's sense.

Guidance. As StableDiffusion3Pipeline: classifier-free guidance when `guidance_scale` > 1, with
the negative prompt ("" when none is given), uncond + s * (cond - uncond). Skip-layer guidance
is off in the pipeline by default and not offered here.

Latents. [1, 16, H/8, W/8] unpacked; the transformer patchifies them itself with a position
table cropped to the size, so each latent size runs its own forward (the size is in the batch
key) while any prompts of one size share it.

Sampler. SD3 ships FlowMatchEulerDiscreteScheduler with a static shift (3.0) and the pipeline
passes no sigmas: the scheduler's own default sigmas. The transformer gets `t` (0..1000) as is.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from omni.errors import InvalidRequestError
from omni.limits import MAX_GUIDANCE, MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.text_cache import TextEmbeddingCache
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

# StableDiffusion3Pipeline.__call__'s defaults.
MAX_SEQUENCE_LENGTH = 256
DEFAULT_STEPS = 28
DEFAULT_GUIDANCE = 7.0


@dataclass(slots=True)
class SD3Cond:
    prompt_embeds: torch.Tensor  # [1, 77 + 256, joint_attention_dim]
    pooled: torch.Tensor  # [1, pooled_projection_dim]
    negative_embeds: torch.Tensor | None = None  # set when the request runs CFG
    negative_pooled: torch.Tensor | None = None


def uses_cfg(params: GenerationParams) -> bool:
    """StableDiffusion3Pipeline.do_classifier_free_guidance: a scale above 1."""
    return params.guidance_scale > 1.0


class SD3Adapter(FamilyAdapter):
    kind: ClassVar = "image"
    supported_fields: ClassVar = frozenset(
        {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_inference_steps",
            "guidance_scale",
            "seed",
        }
    )

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = StableDiffusion3Pipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        pipe = self.pipe
        if pipe.text_encoder_3 is None:
            raise NotImplementedError("SD3 models without text_encoder_3 (T5) are not supported")
        self.scheduler_config = dict(pipe.scheduler.config)
        self.init_samplers(self.scheduler_config)
        self.vae_scale_factor = pipe.vae_scale_factor
        config = pipe.transformer.config
        self.patch_size = config.patch_size
        self.num_channels = config.in_channels
        # PatchEmbed crops its position table, which covers pos_embed_max_size patches a side.
        self.max_side = MAX_SIDE
        if config.pos_embed_max_size is not None:
            largest = config.pos_embed_max_size * self.patch_size * self.vae_scale_factor
            self.max_side = min(MAX_SIDE, largest)
        self.text_len = pipe.tokenizer_max_length + MAX_SEQUENCE_LENGTH
        default_side = pipe.default_sample_size * self.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir,
            width=default_side,
            height=default_side,
            num_inference_steps=DEFAULT_STEPS,
            guidance_scale=DEFAULT_GUIDANCE,
        )
        self.text_cache = TextEmbeddingCache(self._encode_texts)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.vae_scale_factor * self.patch_size,
            max_side=self.max_side,
        )

    # Requests --------------------------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        guidance = d.guidance_scale if params.guidance_scale is None else params.guidance_scale
        if not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
            raise InvalidRequestError(
                f"guidance_scale must be between 0 and {MAX_GUIDANCE:g}, got {guidance}",
                param="guidance_scale",
            )
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=guidance,
        )

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        # Each latent size runs its own forward: the position table is cropped per size.
        key = ("sd3", *self._latent_size(params))
        return (key,) * params.num_inference_steps, 2 if uses_cfg(params) else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        return (height // self.patch_size) * (width // self.patch_size) + self.text_len

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        return params.height // self.vae_scale_factor, params.width // self.vae_scale_factor

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """The pipeline passes no sigmas; mu only for a scheduler with dynamic shifting (SD3.5
        ships a static shift), from the image token count with the pipeline's own defaults."""
        config = self.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return ScheduleInputs()
        height, width = self._latent_size(params)
        mu = calculate_shift(
            (height // self.patch_size) * (width // self.patch_size),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )
        return ScheduleInputs(mu=mu)

    # Tensors ---------------------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        guided = [r for r in requests if uses_cfg(r.params)]
        texts = [r.params.prompt for r in requests]
        texts += [r.params.negative_prompt or "" for r in guided]
        encoded = self.text_cache(texts)
        for (embeds, pooled), request in zip(encoded, requests, strict=False):
            request.cond = SD3Cond(embeds, pooled)
            height, width = self._latent_size(request.params)
            shape = (1, self.num_channels, height, width)
            # The pipeline draws its noise in the prompt embeddings' dtype.
            request.latents = seeded_noise(shape, request.params.seed, embeds.dtype).to(self.device)
            self.start_sampling(request)
        for (embeds, pooled), request in zip(encoded[len(requests) :], guided, strict=True):
            request.cond.negative_embeds = embeds
            request.cond.negative_pooled = pooled

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """encode_prompt on texts alone: a negative prompt is encoded exactly like a prompt."""
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=texts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        )
        return embeds, pooled

    def cfg_scale(self, request: Request) -> float | None:
        return request.params.guidance_scale if uses_cfg(request.params) else None

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        embeds, pooled = [], []
        for row in rows:
            cond = row.request.cond
            embeds.append(cond.negative_embeds if row.uncond else cond.prompt_embeds)
            pooled.append(cond.negative_pooled if row.uncond else cond.pooled)
        # StableDiffusion3Pipeline hands the scheduler's `t` to the transformer unchanged.
        timestep = torch.stack([r.request.timesteps[r.request.step_index] for r in rows])
        prediction = self.pipe.transformer(
            hidden_states=torch.cat([r.request.latents for r in rows]),
            timestep=timestep.to(self.device),
            encoder_hidden_states=torch.cat(embeds),
            pooled_projections=torch.cat(pooled),
            return_dict=False,
        )[0]
        return list(prediction.split(1))

    def denoisers(self) -> list[torch.nn.Module]:
        # diffusers 0.42's JointAttnProcessor2_0 calls torch SDPA itself, so --attention-backend
        # reaches SD3 only once diffusers routes it through its dispatcher.
        return [self.pipe.transformer]

    def decode(self, requests: list[Request]) -> list[Any]:
        vae = self.pipe.vae
        latents = torch.cat([r.latents for r in requests])
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(images, output_type="pil")
