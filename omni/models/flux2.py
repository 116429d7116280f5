"""FLUX.2 [klein] family: Flux2Transformer2DModel over packed latent patches, a Qwen3 text encoder.

Follows diffusers' Flux2KleinPipeline (text-to-image): the prompt goes through Qwen3's chat
template padded to a fixed length (so every prompt shares a forward without masks), the noise is
drawn directly in the patchified [1, 4*C, H/16, W/16] shape and packed to tokens, the schedule is
linspace sigmas with the pipeline's empirical mu, and non-distilled models run real CFG against
the empty prompt when guidance_scale > 1. Rows of several image sizes share one transformer
call, their image tokens padded and masked (omni.models.flux2_padding).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import Flux2KleinPipeline
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

from omni.limits import MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.flux2_padding import PaddedRows, padded_processors
from omni.models.padding import key_mask, pad_rows, processors_replaced, unpad
from omni.models.text_cache import TextEmbeddingCache
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

MAX_SEQUENCE_LENGTH = 512  # Flux2KleinPipeline.__call__'s max_sequence_length
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 4.0
EMPTY_PROMPT = ""  # the pipeline's negative prompt


@dataclass(slots=True)
class Flux2Cond:
    prompt_embeds: torch.Tensor  # [1, text_len, 3 * text hidden size]
    negative_embeds: torch.Tensor | None = None


class Flux2KleinAdapter(FamilyAdapter):
    # The single-stream blocks run on text and image tokens joined, the double-stream first
    # block on image tokens alone: a residual across them is not First-Block Cache's.
    step_cache_problem = "FLUX.2's single-stream blocks are not cached yet"
    kind: ClassVar = "image"
    supported_fields: ClassVar = frozenset(
        {"prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
         "seed"}
    )  # fmt: skip

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = Flux2KleinPipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.init_samplers(dict(self.pipe.scheduler.config))
        self.is_distilled = bool(self.pipe.config.is_distilled)
        self.vae_scale_factor = self.pipe.vae_scale_factor
        # The real tokenizer declares 131072 tokens, so this is the pipeline's 512; a small
        # tokenizer (the tiny model's) shortens the text the same way FLUX.1's adapter does.
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer.model_max_length)
        default_side = self.pipe.default_sample_size * self.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir,
            width=default_side,
            height=default_side,
            num_inference_steps=DEFAULT_STEPS,
            guidance_scale=DEFAULT_GUIDANCE,
        )
        self._image_ids: dict[tuple[int, int], torch.Tensor] = {}
        self._text_ids = Flux2KleinPipeline._prepare_text_ids(
            torch.empty(1, self.max_sequence_length, 1)
        ).to(device)
        self.text_cache = TextEmbeddingCache(self._encode_texts)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.vae_scale_factor * 2,
            max_side=MAX_SIDE,
        )

    # Requests ----------------------------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        guidance = d.guidance_scale if params.guidance_scale is None else params.guidance_scale
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=guidance,
        )

    def uses_cfg(self, params: GenerationParams) -> bool:
        """The pipeline's rule: real CFG above scale 1, never for step-distilled checkpoints."""
        return params.guidance_scale > 1.0 and not self.is_distilled

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        key = ("flux2",)  # one denoiser: every size and prompt shares the forward
        return (key,) * params.num_inference_steps, 2 if self.uses_cfg(params) else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        return height * width + self.max_sequence_length

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        """The packed token grid: one token per 2x2 patch of the VAE latent."""
        multiple = self.vae_scale_factor * 2
        return params.height // multiple, params.width // multiple

    def cfg_scale(self, request: Request) -> float | None:
        return request.params.guidance_scale if self.uses_cfg(request.params) else None

    # Encoding and sampling ---------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        guided = [r for r in requests if self.uses_cfg(r.params)]
        negatives = [r.params.negative_prompt or EMPTY_PROMPT for r in guided]
        texts = self.text_cache([r.params.prompt for r in requests] + negatives)
        channels = self.pipe.transformer.config.in_channels
        for (embeds,), request in zip(texts, requests, strict=False):
            request.cond = Flux2Cond(embeds)
            height, width = self._latent_size(request.params)
            # Drawn in the patchified shape, as the pipeline's prepare_latents does.
            noise = seeded_noise((1, channels, height, width), request.params.seed, embeds.dtype)
            request.latents = Flux2KleinPipeline._pack_latents(noise).to(self.device)
            self.start_sampling(request)
        for (embeds,), request in zip(texts[len(requests) :], guided, strict=True):
            request.cond.negative_embeds = embeds

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """The pipeline's: its empirical mu for this size, and sigmas linspace(1, 1/n, n) unless
        the sampler makes its own flow sigmas (the pipeline passes those none)."""
        steps = params.num_inference_steps
        height, width = self._latent_size(params)
        mu = compute_empirical_mu(image_seq_len=height * width, num_steps=steps)
        if self.has_own_flow_sigmas(params):
            return ScheduleInputs(mu=mu)
        return ScheduleInputs(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor]:
        embeds, _ = self.pipe.encode_prompt(
            prompt=texts, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return (embeds,)

    # Denoising ---------------------------------------------------------------------------------

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        """One transformer call over every row, every prompt sharing it (the text is always
        max_sequence_length tokens); rows of several image sizes are padded to the longest."""
        embeds = torch.cat(
            [r.request.cond.negative_embeds if r.uncond else r.request.cond.prompt_embeds
             for r in rows]
        )  # fmt: skip
        latents = [row.request.latents for row in rows]
        timesteps = torch.stack([r.request.timesteps[r.request.step_index] for r in rows])
        inputs = dict(
            # The pipeline hands t in the latents' dtype, divided by 1000; no guidance embedding.
            timestep=timesteps.to(self.device, latents[0].dtype) / 1000,
            guidance=None,
            encoder_hidden_states=embeds,
            txt_ids=self._text_ids,
            return_dict=False,
        )
        sizes = [self._latent_size(row.request.params) for row in rows]
        transformer = self.pipe.transformer
        if len(set(sizes)) == 1:
            hidden = torch.cat(latents).to(transformer.dtype)
            prediction = transformer(hidden, img_ids=self._image_ids_for(sizes[0]), **inputs)[0]
            return list(prediction.split(1))
        hidden, image_valid = pad_rows(latents)
        tables = {size: transformer.pos_embed(self._joint_ids(size)) for size in set(sizes)}
        cos, _ = pad_rows([tables[size][0][None] for size in sizes])
        sin, _ = pad_rows([tables[size][1][None] for size in sizes])
        text_valid = torch.ones(len(rows), embeds.shape[1], dtype=torch.bool, device=self.device)
        mask = key_mask(torch.cat([text_valid, image_valid], dim=1), hidden.dtype)
        longest = max(sizes, key=lambda size: size[0] * size[1])
        with processors_replaced(padded_processors(transformer, PaddedRows(cos, sin, mask))):
            # img_ids sized like the padded batch; the processors use the rows' own tables.
            prediction = transformer(
                hidden.to(transformer.dtype), img_ids=self._image_ids_for(longest), **inputs
            )[0]
        return unpad(prediction, [x.shape[1] for x in latents])

    def _joint_ids(self, size: tuple[int, int]) -> torch.Tensor:
        """Text then image ids of one row, in the order the transformer concatenates them."""
        return torch.cat([self._text_ids[0], self._image_ids_for(size)[0]])

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer]

    def _image_ids_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The pipeline's 4-D (t, h, w, l) ids of a packed token grid, cached per size."""
        if size not in self._image_ids:
            grid = torch.empty(1, 1, *size)
            self._image_ids[size] = Flux2KleinPipeline._prepare_latent_ids(grid).to(self.device)
        return self._image_ids[size]

    # Decoding ----------------------------------------------------------------------------------

    def decode(self, requests: list[Request]) -> list[Any]:
        """Tokens back to the patchified grid, the VAE's batch-norm statistics undone, 2x2
        patches unfolded to latent channels, then the VAE decode (the pipeline's order)."""
        size = self._latent_size(requests[0].params)
        latents = torch.cat([r.latents for r in requests])
        ids = self._image_ids_for(size).expand(len(requests), -1, -1)
        latents = Flux2KleinPipeline._unpack_latents_with_ids(latents, ids, *size)
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        latents = latents * std.to(latents.device, latents.dtype) + mean
        latents = Flux2KleinPipeline._unpatchify_latents(latents)
        images = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
        return self.pipe.image_processor.postprocess(images, output_type="pil")
