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

import torch
from diffusers import StableDiffusion3Pipeline
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

from omni.errors import InvalidRequestError
from omni.limits import MAX_GUIDANCE, MAX_SIDE
from omni.models.base import Row
from omni.models.image_family import ImageAdapter, PooledTextCond
from omni.request import GenerationParams
from omni.samplers import ScheduleInputs

# StableDiffusion3Pipeline.__call__'s defaults.
MAX_SEQUENCE_LENGTH = 256
DEFAULT_STEPS = 28
DEFAULT_GUIDANCE = 7.0
SD3Cond = PooledTextCond  # [1, 77 + 256, joint_attention_dim] and [1, pooled_projection_dim]


class SD3Adapter(ImageAdapter):
    pipeline_class = StableDiffusion3Pipeline
    # Each latent size runs its own forward: the position table is cropped per size.
    family = "sd3"
    size_in_key = True
    cond_class = PooledTextCond
    # JointAttnProcessor2_0's per-row inputs (the text is a fixed 77 + 256 tokens, unmasked).
    taylorseer_row_args = frozenset({"hidden_states", "encoder_hidden_states", "attention_mask"})
    # `denoisers` is the transformer, but diffusers 0.42's JointAttnProcessor2_0 calls torch SDPA
    # itself: --attention-backend reaches SD3 only once diffusers routes it through its dispatcher.
    default_steps = DEFAULT_STEPS
    default_guidance = DEFAULT_GUIDANCE

    def _setup(self) -> None:
        pipe = self.pipe
        if pipe.text_encoder_3 is None:
            raise NotImplementedError("SD3 models without text_encoder_3 (T5) are not supported")
        config = pipe.transformer.config
        self.patch_size = config.patch_size
        self.num_channels = config.in_channels
        self.text_len = pipe.tokenizer_max_length + MAX_SEQUENCE_LENGTH

    @property
    def max_side(self) -> int:
        """PatchEmbed crops its position table, which covers pos_embed_max_size patches a side."""
        patches = self.pipe.transformer.config.pos_embed_max_size
        if patches is None:
            return MAX_SIDE
        return min(MAX_SIDE, patches * self.patch_size * self.vae_scale_factor)

    # Requests --------------------------------------------------------------------------------

    def check_guidance(self, guidance: float | None) -> None:
        if not (math.isfinite(guidance) and 0.0 <= guidance <= MAX_GUIDANCE):
            raise InvalidRequestError(
                f"guidance_scale must be between 0 and {MAX_GUIDANCE:g}, got {guidance}",
                param="guidance_scale",
            )

    def uses_cfg(self, params: GenerationParams) -> bool:
        """StableDiffusion3Pipeline.do_classifier_free_guidance: a scale above 1."""
        return params.guidance_scale > 1.0

    def _text_tokens(self, params: GenerationParams) -> int:
        return self.text_len

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """The pipeline passes no sigmas; mu only for a scheduler with dynamic shifting (SD3.5
        ships a static shift), from the image token count with the pipeline's own defaults."""
        config = self.scheduler_config
        if not config.get("use_dynamic_shifting"):
            return ScheduleInputs()
        mu = calculate_shift(
            self._image_tokens(params),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.16),
        )
        return ScheduleInputs(mu=mu)

    # Tensors ---------------------------------------------------------------------------------

    def _noise_channels(self) -> int:
        return self.num_channels

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

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        # StableDiffusion3Pipeline hands the scheduler's `t` to the transformer unchanged.
        prediction = self.pipe.transformer(
            hidden_states=torch.cat([r.request.latents for r in rows]),
            timestep=self._timesteps(rows).to(self.device),
            encoder_hidden_states=torch.cat([r.request.cond.embeds(r.uncond) for r in rows]),
            pooled_projections=torch.cat([r.request.cond.pooled_for(r.uncond) for r in rows]),
            return_dict=False,
        )[0]
        return list(prediction.split(1))
