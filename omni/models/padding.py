"""Padding rows of different sequence lengths into one batch, for forwards over mixed shapes.

Rows are padded rather than packed into one sequence because every row keeps its own AdaLN
modulation (timestep, pooled text, guidance embeddings), which is per sample in the batch dim.
A key mask keeps each row's real tokens from attending to padding; what padded query positions
compute is thrown away.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn
from torch.nn.utils.rnn import pad_sequence

if TYPE_CHECKING:
    from omni.models.base import Row

# Backends of diffusers' dispatcher that take an attention mask; others (flash-attn) run mixed
# batches on torch SDPA. On CUDA, flash-attn's varlen kernel (flash_attn_varlen_func with the
# rows' cu_seqlens, no padding at all) is where such batches should go instead.
MASKED_BACKENDS = frozenset({AttentionBackendName.NATIVE, AttentionBackendName.XFORMERS})


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, S_i, ...] tensors -> ([B, S_max, ...] zero-padded, [B, S_max] bool: real positions)."""
    padded = pad_sequence([row[0] for row in rows], batch_first=True)
    lengths = torch.tensor([row.shape[1] for row in rows], device=padded.device)
    positions = torch.arange(padded.shape[1], device=padded.device)
    return padded, positions < lengths[:, None]


def unpad(padded: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
    """Row b's first lengths[b] positions of [B, S_max, ...], as [1, S_b, ...] views."""
    return [padded[index : index + 1, :length] for index, length in enumerate(lengths)]


def key_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An additive [B, 1, 1, S] attention mask from [B, S] real positions: -inf on padding.

    Additive rather than boolean because xformers casts a mask to the query dtype as a bias.
    """
    mask = torch.zeros(valid.shape, dtype=dtype, device=valid.device)
    return mask.masked_fill_(~valid, float("-inf"))[:, None, None, :]


def masked_backend(backend: AttentionBackendName | str | None) -> AttentionBackendName:
    """The dispatcher backend for a masked attention: the processor's own when it takes masks."""
    if backend is not None and AttentionBackendName(backend) in MASKED_BACKENDS:
        return AttentionBackendName(backend)
    return AttentionBackendName.NATIVE


@contextmanager
def processors_replaced(replacements: dict[torch.nn.Module, Any]) -> Iterator[None]:
    """Attention modules run the given processors inside the block, their own ones again after."""
    originals = {module: module.processor for module in replacements}
    try:
        for module, processor in replacements.items():
            module.processor = processor
        yield
    finally:
        for module, processor in originals.items():
            module.processor = processor


def own_tokens(rows: list[Row], predictions: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each row's prediction for its latents: the tokens a row adds after them are dropped."""
    return [p[:, : r.request.latents.shape[1]] for p, r in zip(predictions, rows, strict=True)]


class PaddedRows:
    """Per-row rotary tables ([B, S, D] cos and sin) and the batch's additive key mask: what the
    padded attention processors of the FLUX families share."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> None:
        self.cos, self.sin = cos[:, :, None], sin[:, :, None]  # broadcast over heads
        self.mask = mask

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """diffusers' apply_rotary_emb (interleaved real pairs), with a table per row."""
        real, imag = x.reshape(*x.shape[:-1], -1, 2).unbind(-1)
        rotated = torch.stack([-imag, real], dim=-1).flatten(3)
        return (x.float() * self.cos + rotated.float() * self.sin).to(x.dtype)

    def attend(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: Any
    ) -> torch.Tensor:
        hidden = dispatch_attention_fn(
            self.rotate(query), self.rotate(key), value, attn_mask=self.mask, backend=backend
        )
        return hidden.flatten(2, 3).to(query.dtype)


def joint_qkv(attn: Any, projections: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor, ...]:
    """Query, key and value of a joint (text + image) attention from its six projections, split
    into heads and normed as FLUX's and FLUX.2's processors do, text first."""
    query, key, value, text_query, text_key, text_value = projections
    query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
    key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
    value = value.unflatten(-1, (-1, attn.head_dim))
    if attn.added_kv_proj_dim is not None:
        text_query = attn.norm_added_q(text_query.unflatten(-1, (-1, attn.head_dim)))
        text_key = attn.norm_added_k(text_key.unflatten(-1, (-1, attn.head_dim)))
        query = torch.cat([text_query, query], dim=1)
        key = torch.cat([text_key, key], dim=1)
        value = torch.cat([text_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)
    return query, key, value
