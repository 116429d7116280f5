"""Qwen-Image family: QwenImageTransformer2DModel over packed 2x2 latent patches, with the
Qwen2.5-VL text encoder's variable-length prompt embeddings.

Rows of one forward share a latent size (it is in the batch key: the text RoPE of
QwenImageTransformer2DModel starts after the image's largest side, so the size moves every text
position) but mix text lengths: embeddings are zero-padded to the longest row and
`encoder_hidden_states_mask` keeps every row from attending to padding. Real text positions are
unchanged by padding at the end, so each row sees exactly what it sees alone.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from diffusers import QwenImagePipeline
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0
from tokenizers import Tokenizer

from omni.errors import InvalidRequestError
from omni.flow import cfg_combine_all, config_shift, linear_sigmas
from omni.models.base import Row
from omni.models.image_family import TextCond, TrueCFGAdapter, uses_true_cfg
from omni.models.padding import masked_backend, own_tokens, pad_rows, processors_replaced
from omni.models.text_cache import Embedding
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

# QwenImagePipeline.__call__'s defaults.
MAX_SEQUENCE_LENGTH = 512
DEFAULT_STEPS = 50
DEFAULT_TRUE_CFG_SCALE = 4.0


QwenImageCond = TextCond  # [1, text_len, joint_attention_dim]: the prompt's own tokens


class QwenImageAdapter(TrueCFGAdapter):
    # Rows of different text lengths carry their own key masks into every block.
    cache_row_args = TrueCFGAdapter.cache_row_args | {"encoder_hidden_states_mask"}
    # QwenDoubleStreamAttnProcessor2_0's per-row inputs; its rotary tables, one per token
    # layout, are the whole call's.
    taylorseer_row_args = frozenset(
        {"hidden_states", "encoder_hidden_states", "encoder_hidden_states_mask"}
    )
    pipeline_class = QwenImagePipeline
    # Each latent size runs its own forwards: the text RoPE starts after the image's largest side.
    family = "qwen_image"
    size_in_key = True
    default_steps = DEFAULT_STEPS
    default_true_cfg = DEFAULT_TRUE_CFG_SCALE

    def _setup(self) -> None:
        # A tokenizer of its own for counting tokens on the scheduler's side: the pipeline's is
        # reconfigured (padding, truncation) on every call from the encoding thread.
        self.counter = Tokenizer.from_str(self.pipe.tokenizer.backend_tokenizer.to_str())
        self.counter.no_padding()
        self.counter.no_truncation()

    def check_guidance(self, guidance: float | None) -> None:
        if self.has_guidance_embeds and guidance is None:
            raise InvalidRequestError(
                f"guidance_scale is required by {self.name} (a guidance-distilled model)",
                param="guidance_scale",
            )

    def _text_tokens(self, params: GenerationParams) -> int:
        return max(self._text_length(text) for text in self._row_texts(params))

    def _text_length(self, text: str) -> int:
        """The embedding length the pipeline keeps for a text: its templated tokens less the
        dropped template prefix, at most max_sequence_length."""
        pipe = self.pipe
        tokens = len(self.counter.encode(pipe.prompt_template_encode.format(text)).ids)
        kept = min(tokens, pipe.tokenizer_max_length + pipe.prompt_template_encode_start_idx)
        return min(kept - pipe.prompt_template_encode_start_idx, MAX_SEQUENCE_LENGTH)

    def _encode(self, texts: list[str]) -> list[Embedding]:
        """One text at a time, as `_encode_texts` needs."""
        return [self.text_cache([text])[0] for text in texts]

    def _noise_channels(self) -> int:
        return self.pipe.transformer.config.in_channels // 4

    def _pack(self, noise: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = noise.shape
        return QwenImagePipeline._pack_latents(noise, 1, channels, height, width)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor]:
        """One text's embeddings, encoded alone as the pipeline encodes a single prompt: no
        padding in the text encoder, so the result never depends on other prompts."""
        (text,) = texts  # `_encode` asks the cache for one text at a time
        embeds, _ = self.pipe.encode_prompt(
            prompt=[text], device=self.device, max_sequence_length=MAX_SEQUENCE_LENGTH
        )
        return (embeds,)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """QwenImagePipeline's: sigmas linspace(1, 1/n, n), mu from the image token count."""
        mu = config_shift(self.scheduler_config, self._image_tokens(params))
        return ScheduleInputs(sigmas=linear_sigmas(params.num_inference_steps), mu=mu)

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        """Rows of one token layout (`_row_layout`, the pad group) per transformer call: Qwen's
        RoPE takes one set of image shapes for the whole batch."""
        groups: dict[Hashable, list[int]] = {}
        for index, row in enumerate(rows):
            groups.setdefault(self._row_layout(row.request), []).append(index)
        predictions: list[torch.Tensor | None] = [None] * len(rows)
        for indices in groups.values():
            outputs = self._forward_layout([rows[i] for i in indices])
            for index, output in zip(indices, outputs, strict=True):
                predictions[index] = output
        return predictions  # type: ignore[return-value]

    def _forward_layout(self, rows: list[Row]) -> list[torch.Tensor]:
        embeds = [row.request.cond.embeds(row.uncond) for row in rows]
        latents = torch.cat([self._row_tokens(r.request) for r in rows])
        text, valid = pad_rows(embeds)
        mixed_lengths = not bool(valid.all())
        inputs = dict(
            hidden_states=latents,
            # The pipeline hands t in the latents' dtype, divided by 1000.
            timestep=self._timesteps(rows).to(self.device, latents.dtype) / 1000,
            guidance=self._guidance(rows),
            # No mask when no row is padded, as encode_prompt drops an all-ones one.
            encoder_hidden_states_mask=valid if mixed_lengths else None,
            encoder_hidden_states=text,
            img_shapes=[self._img_shapes(rows[0].request)] * len(rows),
            return_dict=False,
        )
        with processors_replaced(self._masked_processors() if mixed_lengths else {}):
            prediction = self.pipe.transformer(**inputs)[0]
        return own_tokens(rows, prediction.split(1))

    def _row_layout(self, request: Request) -> Hashable:
        """What rows of one transformer call share beyond the latent size (in the batch key)."""
        return self.pad_group(request.params)

    def cache_problem(self, kind: str | None) -> str | None:
        if kind == "fbcache" and self.pipe.transformer.config.get("zero_cond_t"):
            # Its blocks take a timestep embedding of 2 x batch rows (the latents' then the
            # references'), which First-Block Cache's row slicing does not split.
            return (
                "First-Block Cache is not wired for Qwen-Image transformers with zero_cond_t "
                "(two timestep embeddings per row)"
            )
        return super().cache_problem(kind)

    def row_shape(self, row: Row) -> tuple:
        """Rows of one transformer call (an edit's reference layout splits `forward` into calls
        of their own, which the step caches must see one at a time)."""
        return (*super().row_shape(row), self._row_layout(row.request))

    def _row_tokens(self, request: Request) -> torch.Tensor:
        """The image tokens a row of the request puts through the transformer."""
        return request.latents

    def _img_shapes(self, request: Request) -> list[tuple[int, int, int]]:
        """(frames, token rows, token columns) of each image in a row's tokens."""
        height, width = self._latent_size(request.params)
        return [(1, height // 2, width // 2)]

    def _masked_processors(self) -> dict[torch.nn.Module, Any]:
        """Qwen's own attention processor on a dispatcher backend that takes a mask (flash-attn
        does not), for forwards whose rows carry padded text."""
        processors = {}
        for block in self.pipe.transformer.transformer_blocks:
            backend = getattr(block.attn.processor, "_attention_backend", None)
            processor = QwenDoubleStreamAttnProcessor2_0()
            processor._attention_backend = masked_backend(backend)
            processors[block.attn] = processor
        return processors

    def guide(
        self, cond: list[torch.Tensor], uncond: list[torch.Tensor], scales: list[float]
    ) -> list[torch.Tensor]:
        """The pipeline's true CFG: uncond + s * (cond - uncond), then rescaled so every token's
        channel vector keeps the conditional prediction's norm."""
        return rescale_to_norms(cfg_combine_all(cond, uncond, scales), cond)

    def _unpack(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        latents = QwenImagePipeline._unpack_latents(
            latents, params.height, params.width, self.vae_scale_factor
        )
        return latents.to(self.pipe.vae.dtype)

    def _vae_input(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        """The Wan-style VAE's per-channel mean and std undone, on 5-D [B, C, 1, H, W]."""
        latents = self._unpack(latents, params)
        config = self.pipe.vae.config
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(
            latents.device, latents.dtype
        )
        return latents / inverse_std + mean

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return super()._vae_decode(latents)[:, :, 0]  # the single frame


def rescale_to_norms(mixed: list[torch.Tensor], conds: list[torch.Tensor]) -> list[torch.Tensor]:
    """mixed[i] * (|conds[i]| / |mixed[i]|), norms over the last (channel) dim, as
    QwenImagePipeline does after CFG. Requests of one latent size are stacked so each size
    costs a few batched operations."""
    out: list[torch.Tensor | None] = [None] * len(mixed)
    by_shape: dict[torch.Size, list[int]] = {}
    for index, tensor in enumerate(mixed):
        by_shape.setdefault(tensor.shape, []).append(index)
    for indices in by_shape.values():
        combined = torch.stack([mixed[i] for i in indices])
        cond_norm = torch.norm(torch.stack([conds[i] for i in indices]), dim=-1, keepdim=True)
        noise_norm = torch.norm(combined, dim=-1, keepdim=True)
        for i, scaled in zip(indices, combined * (cond_norm / noise_norm), strict=True):
            out[i] = scaled
    return out  # type: ignore[return-value]


__all__ = ["QwenImageAdapter", "QwenImageCond", "rescale_to_norms", "uses_true_cfg"]
