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
from diffusers.models.attention_dispatch import AttentionBackendName
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
