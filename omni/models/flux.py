"""FLUX family: FluxTransformer2DModel over packed 2x2 latent patches, CLIP + T5 text encoders."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxAttention, _get_qkv_projections

from omni.flow import config_shift, linear_sigmas
from omni.models.base import Row
from omni.models.flux_edit import EDIT_FIELDS, FluxEditMixin
from omni.models.image_family import PooledTextCond, TrueCFGAdapter
from omni.models.padding import (
    PaddedRows,
    joint_qkv,
    key_mask,
    masked_backend,
    own_tokens,
    pad_rows,
    processors_replaced,
    unpad,
)
from omni.models.rotary import RotaryTables, Table
from omni.request import GenerationParams, Request
from omni.samplers import Schedule, ScheduleInputs

MAX_SEQUENCE_LENGTH = 512
FluxCond = PooledTextCond  # [1, text_len, joint_attention_dim] and [1, pooled_projection_dim]


class FluxBase(TrueCFGAdapter):
    """FLUX.1's text-to-image: what FluxPipeline and FluxKontextPipeline models share. A row's
    transformer tokens are its latents, then any tokens of its own (`_row_tokens`, Kontext's
    reference image) that the prediction drops again."""

    pipeline_class = FluxPipeline
    family = "flux"  # one denoiser: every size shares the forward
    cond_class = PooledTextCond
    default_steps = 28
    default_guidance = 3.5
    default_true_cfg = 1.0
    # FluxAttention's per-row inputs; its rotary table is one for all rows of a same-size group.
    taylorseer_row_args = frozenset({"hidden_states", "encoder_hidden_states", "attention_mask"})
    supports_lora = True

    def _setup(self) -> None:
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, self.pipe.tokenizer_2.model_max_length)
        self._image_ids: dict[tuple[int, int], torch.Tensor] = {}
        self.rotary = RotaryTables(self.pipe.transformer.pos_embed)

    def _text_tokens(self, params: GenerationParams) -> int:
        return self.max_sequence_length

    def _noise_channels(self) -> int:
        return self.pipe.transformer.config.in_channels // 4

    def _pack(self, noise: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = noise.shape
        return FluxPipeline._pack_latents(noise, 1, channels, height, width)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """FluxPipeline's: mu from the image token count, and sigmas linspace(1, 1/n, n) except
        for schedulers with flow sigmas of their own (UniPC, DPM-Solver), which it passes none."""
        mu = config_shift(self.scheduler_config, self._image_tokens(params))
        if self.has_own_flow_sigmas(params):
            return ScheduleInputs(mu=mu)
        return ScheduleInputs(sigmas=linear_sigmas(params.num_inference_steps), mu=mu)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=texts,
            prompt_2=None,
            device=self.device,
            max_sequence_length=self.max_sequence_length,
        )
        return embeds, pooled

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        embeds = [row.request.cond.embeds(row.uncond) for row in rows]
        pooled = [row.request.cond.pooled_for(row.uncond) for row in rows]
        latents = [self._row_tokens(r.request) for r in rows]
        inputs = dict(
            # FluxPipeline passes t in the latents' dtype, divided by 1000.
            timestep=self._timesteps(rows).to(self.device, latents[0].dtype) / 1000,
            guidance=self._guidance(rows),
            pooled_projections=torch.cat(pooled),
            return_dict=False,
        )
        shapes = zip(latents, embeds, rows, strict=True)
        if len({(x.shape, e.shape, self._row_layout(r.request)) for x, e, r in shapes}) > 1:
            return self._forward_padded(rows, latents, embeds, inputs)
        text_len = embeds[0].shape[1]
        with self.rotary.answering(self._rotary_table(text_len, rows[0].request)):
            prediction = self.pipe.transformer(
                hidden_states=torch.cat(latents),
                encoder_hidden_states=torch.cat(embeds),
                txt_ids=self._text_ids(text_len),
                img_ids=self._row_ids(rows[0].request),
                **inputs,
            )[0]
        return own_tokens(rows, prediction.split(1))

    def _forward_padded(
        self,
        rows: list[Row],
        latents: list[torch.Tensor],
        embeds: list[torch.Tensor],
        inputs: dict[str, Any],
    ) -> list[torch.Tensor]:
        """Rows of different sizes in one forward: image tokens padded to the longest row, each
        row rotated by its own positions, padded text and image keys masked out."""
        transformer = self.pipe.transformer
        hidden, image_valid = pad_rows(latents)
        text, text_valid = pad_rows(embeds)
        text_ids = self._text_ids(text.shape[1])
        row_tables = [self._rotary_table(text.shape[1], row.request) for row in rows]
        cos, _ = pad_rows([table[0][None] for table in row_tables])
        sin, _ = pad_rows([table[1][None] for table in row_tables])
        mask = key_mask(torch.cat([text_valid, image_valid], dim=1), hidden.dtype)
        padded = PaddedRows(cos, sin, mask)
        processors = {
            module: _PaddedFluxAttnProcessor(module.processor, padded)
            for module in transformer.modules()
            if isinstance(module, FluxAttention)
        }
        longest = max(range(len(rows)), key=lambda index: latents[index].shape[1])
        # The transformer's own table (sized like the padded batch) goes unused: the processors
        # rotate each row by its own.
        with processors_replaced(processors), self.rotary.answering(row_tables[longest]):
            prediction = transformer(
                hidden_states=hidden,
                encoder_hidden_states=text,
                txt_ids=text_ids,
                img_ids=self._row_ids(rows[longest].request),
                **inputs,
            )[0]
        return own_tokens(rows, unpad(prediction, [x.shape[1] for x in latents]))

    def row_shape(self, row: Row) -> tuple:
        """Rows of one token layout: a Kontext edit's reference tokens lengthen its sequence and
        add their positions to the rotary table, so the step caches run it apart from others."""
        return (*super().row_shape(row), self._row_layout(row.request))

    def _row_tokens(self, request: Request) -> torch.Tensor:
        """The image tokens a row of the request puts through the transformer."""
        return request.latents

    def _row_layout(self, request: Request) -> Hashable:
        """What decides the positions of those tokens: rows that share it share `_row_ids`."""
        return self._latent_size(request.params)

    def _row_ids(self, request: Request) -> torch.Tensor:
        return self._image_ids_for(request.params)

    def _rotary_table(self, text_len: int, request: Request) -> Table:
        """The rotary table of a row of `request` after `text_len` text tokens."""
        return self.rotary.get(
            (text_len, self._row_layout(request)),
            lambda: torch.cat([self._text_ids(text_len), self._row_ids(request)]),
        )

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

    def _unpack(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        return FluxPipeline._unpack_latents(
            latents, params.height, params.width, self.vae_scale_factor
        )


class FluxAdapter(FluxEditMixin, FluxBase):
    """FluxPipeline models, with image-to-image and inpainting (omni.models.flux_edit)."""

    supported_fields = FluxBase.supported_fields | EDIT_FIELDS
    can_edit = True

    def _setup(self) -> None:
        super()._setup()
        self._setup_edits()

    # Edits (omni.models.flux_edit) -------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        return self.resolve_edit(super().resolve(params))

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        keys, rows = super().plan(params)
        return self.edit_plan(keys, params), rows

    def schedule(self, params: GenerationParams) -> Schedule:
        return self.edit_schedule(super().schedule(params), params)

    def start_sampling(self, request: Request) -> None:
        """An edit's schedule is the full one's tail, so its sampler starts mid-way."""
        params = request.params
        sampler = self.samplers[params.sampler or self.default_sampler]
        full = sampler.schedule(params.num_inference_steps, self.schedule_inputs(params))
        schedule = self.edit_schedule(full, params)
        request.sampler = sampler
        request.sigmas, request.timesteps = schedule.sigmas, schedule.timesteps
        request.sampler_state = sampler.start(schedule)

    def prepare(self, requests: list[Request]) -> None:
        super().prepare(requests)
        for request in requests:
            if request.params.image is not None:
                self.prepare_edit(request)


class _PaddedFluxAttnProcessor:
    """FluxAttnProcessor over rows padded to one length: row b is rotated by its own [S, D]
    rotary table and attends only to its unmasked keys. The transformer's single
    `image_rotary_emb` is ignored."""

    def __init__(self, replaced: Any, rows: PaddedRows) -> None:
        self.backend = masked_backend(getattr(replaced, "_attention_backend", None))
        self.rows = rows

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        projections = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        hidden_states = self.rows.attend(*joint_qkv(attn, projections), self.backend)
        if encoder_hidden_states is None:
            return hidden_states
        text_len = encoder_hidden_states.shape[1]
        text, image = hidden_states[:, :text_len], hidden_states[:, text_len:]
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())
