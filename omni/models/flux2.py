"""FLUX.2 [klein] family: Flux2Transformer2DModel over packed latent patches, a Qwen3 text encoder.

Follows diffusers' Flux2KleinPipeline (text-to-image): the prompt goes through Qwen3's chat
template padded to a fixed length (so every prompt shares a forward without masks), the noise is
drawn directly in the patchified [1, 4*C, H/16, W/16] shape and packed to tokens, the schedule is
linspace sigmas with the pipeline's empirical mu, and non-distilled models run real CFG against
the empty prompt when guidance_scale > 1. Rows of several image sizes share one transformer
call, their image tokens padded and masked (omni.models.flux2_padding).
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import Flux2KleinPipeline
from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

from omni.models.base import Row
from omni.models.flux2_padding import padded_processors
from omni.models.image_family import ImageAdapter, TextCond
from omni.models.padding import PaddedRows, key_mask, pad_rows, processors_replaced, unpad
from omni.models.rotary import RotaryTables
from omni.request import GenerationParams
from omni.samplers import ScheduleInputs

MAX_SEQUENCE_LENGTH = 512  # Flux2KleinPipeline.__call__'s max_sequence_length
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 4.0
Flux2Cond = TextCond  # [1, text_len, 3 * text hidden size]


class Flux2KleinAdapter(ImageAdapter):
    # The single-stream blocks run on text and image tokens joined, the double-stream first
    # block on image tokens alone: a residual across them is not First-Block Cache's.
    step_cache_problem = "FLUX.2's single-stream blocks are not cached yet"
    # Both attention modules' per-row inputs; the rotary table of a forward's one size is shared.
    taylorseer_row_args = frozenset({"hidden_states", "encoder_hidden_states", "attention_mask"})
    pipeline_class = Flux2KleinPipeline
    family = "flux2"  # one denoiser: every size and prompt shares the forward
    default_steps = DEFAULT_STEPS
    default_guidance = DEFAULT_GUIDANCE

    def _setup(self) -> None:
        self.is_distilled = bool(self.pipe.config.is_distilled)
        # The real tokenizer declares 131072 tokens, so this is the pipeline's 512; a small
        # tokenizer (the tiny model's) shortens the text the same way FLUX.1's adapter does.
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer.model_max_length)
        self._image_ids: dict[tuple[int, int], torch.Tensor] = {}
        self.rotary = RotaryTables(self.pipe.transformer.pos_embed)
        self._text_ids = Flux2KleinPipeline._prepare_text_ids(
            torch.empty(1, self.max_sequence_length, 1)
        ).to(self.device)

    # Requests ----------------------------------------------------------------------------------

    def uses_cfg(self, params: GenerationParams) -> bool:
        """The pipeline's rule: real CFG above scale 1, never for step-distilled checkpoints."""
        return params.guidance_scale > 1.0 and not self.is_distilled

    def _text_tokens(self, params: GenerationParams) -> int:
        return self.max_sequence_length

    def _image_tokens(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        return height * width

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        """The packed token grid: one token per 2x2 patch of the VAE latent."""
        multiple = self.vae_scale_factor * 2
        return params.height // multiple, params.width // multiple

    # Encoding and sampling ---------------------------------------------------------------------

    def _noise_channels(self) -> int:
        return self.pipe.transformer.config.in_channels

    def _pack(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise drawn in the patchified shape, as the pipeline's prepare_latents does, to
        tokens."""
        return Flux2KleinPipeline._pack_latents(noise)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """The pipeline's: its empirical mu for this size, and sigmas linspace(1, 1/n, n) unless
        the sampler makes its own flow sigmas (the pipeline passes those none)."""
        steps = params.num_inference_steps
        mu = compute_empirical_mu(image_seq_len=self._image_tokens(params), num_steps=steps)
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
        embeds = torch.cat([row.request.cond.embeds(row.uncond) for row in rows])
        latents = [row.request.latents for row in rows]
        inputs = dict(
            # The pipeline hands t in the latents' dtype, divided by 1000; no guidance embedding.
            timestep=self._timesteps(rows).to(self.device, latents[0].dtype) / 1000,
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
        tables = {
            size: self.rotary.get(size, lambda size=size: self._joint_ids(size))
            for size in set(sizes)
        }
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

    def _image_ids_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The pipeline's 4-D (t, h, w, l) ids of a packed token grid, cached per size."""
        if size not in self._image_ids:
            grid = torch.empty(1, 1, *size)
            self._image_ids[size] = Flux2KleinPipeline._prepare_latent_ids(grid).to(self.device)
        return self._image_ids[size]

    # Decoding ----------------------------------------------------------------------------------

    def _vae_input(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        """Tokens back to the patchified grid, the VAE's batch-norm statistics undone, 2x2
        patches unfolded to latent channels (the pipeline's order)."""
        size = self._latent_size(params)
        ids = self._image_ids_for(size).expand(len(latents), -1, -1)
        latents = Flux2KleinPipeline._unpack_latents_with_ids(latents, ids, *size)
        vae = self.pipe.vae
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        latents = latents * std.to(latents.device, latents.dtype) + mean
        return Flux2KleinPipeline._unpatchify_latents(latents).to(vae.dtype)
