"""Rows of different image sizes in one Flux2Transformer2DModel forward.

The transformer computes a single rotary table for the whole batch and its processors take no
per-row positions, so a mixed batch runs with these processors in place of diffusers' two
(Flux2AttnProcessor in the double-stream blocks, Flux2ParallelSelfAttnProcessor in the single
ones): the same projections and norms, but row b is rotated by its own [S, D] table and attends
only to its unmasked keys. Image tokens are padded at the end of each row; the text is always
the full fixed length, so only image keys are ever masked. What padded queries compute is
thrown away by the caller.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_flux2 import (
    Flux2Attention,
    Flux2ParallelSelfAttention,
    _get_qkv_projections,
)

from omni.models.padding import PaddedRows, joint_qkv, masked_backend


class PaddedFlux2AttnProcessor:
    """Flux2AttnProcessor (double-stream: text and image projected apart, attended jointly)."""

    def __init__(self, replaced: Any, rows: PaddedRows) -> None:
        self.backend = masked_backend(getattr(replaced, "_attention_backend", None))
        self.rows = rows

    def __call__(
        self,
        attn: Flux2Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        projections = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        query, key, value = joint_qkv(attn, projections)
        hidden_states = self.rows.attend(query, key, value, self.backend)
        if encoder_hidden_states is None:
            return attn.to_out[1](attn.to_out[0](hidden_states))
        text_len = encoder_hidden_states.shape[1]
        text, image = hidden_states[:, :text_len], hidden_states[:, text_len:]
        return attn.to_out[1](attn.to_out[0](image.contiguous())), attn.to_add_out(text)


class PaddedFlux2SingleAttnProcessor:
    """Flux2ParallelSelfAttnProcessor (single-stream: one fused QKV + MLP-in projection)."""

    def __init__(self, replaced: Any, rows: PaddedRows) -> None:
        self.backend = masked_backend(getattr(replaced, "_attention_backend", None))
        self.rows = rows

    def __call__(
        self,
        attn: Flux2ParallelSelfAttention,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> torch.Tensor:
        projected = attn.to_qkv_mlp_proj(hidden_states)
        qkv_dim = 3 * attn.inner_dim
        mlp_dim = attn.mlp_hidden_dim * attn.mlp_mult_factor
        local_qkv = projected.shape[-1] * qkv_dim // (qkv_dim + mlp_dim)
        qkv, mlp = projected.split([local_qkv, projected.shape[-1] - local_qkv], dim=-1)
        query, key, value = (x.unflatten(-1, (-1, attn.head_dim)) for x in qkv.chunk(3, dim=-1))
        attended = self.rows.attend(attn.norm_q(query), attn.norm_k(key), value, self.backend)
        return attn.to_out(torch.cat([attended, attn.mlp_act_fn(mlp)], dim=-1))


def padded_processors(transformer: torch.nn.Module, rows: PaddedRows) -> dict[Any, Any]:
    """A padded processor for every attention module of the transformer."""
    processors: dict[Any, Any] = {}
    for module in transformer.modules():
        if isinstance(module, Flux2Attention):
            processors[module] = PaddedFlux2AttnProcessor(module.processor, rows)
        elif isinstance(module, Flux2ParallelSelfAttention):
            processors[module] = PaddedFlux2SingleAttnProcessor(module.processor, rows)
    return processors
