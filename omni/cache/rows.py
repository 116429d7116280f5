"""A family adapter's forward with First-Block Cache for the rows whose requests ask for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from omni.cache.first_block import RowFirstBlockCache, is_registered_block, transformer_blocks
from omni.cache.state import RequestCache

if TYPE_CHECKING:
    from omni.models.base import FamilyAdapter, Row


def cached_forward(adapter: FamilyAdapter, rows: list[Row]) -> list[torch.Tensor]:
    """`adapter.forward(rows)` with each caching row deciding for itself.

    Rows of different shapes run in forwards of their own: the padded paths keep per-row state
    outside the blocks' arguments, which the cache cannot slice.
    """
    by_shape: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        by_shape.setdefault(adapter.row_shape(row), []).append(index)
    outputs: list[torch.Tensor | None] = [None] * len(rows)
    for indices in by_shape.values():
        group = _forward_one_shape(adapter, [rows[i] for i in indices])
        for i, output in zip(indices, group, strict=True):
            outputs[i] = output
    return outputs


def _forward_one_shape(adapter: FamilyAdapter, rows: list[Row]) -> list[torch.Tensor]:
    denoiser_key = rows[0].request.batch_key
    caches, thresholds = [], []
    for row in rows:
        request = row.request
        if request.params.cache != "fbcache":
            caches.append(None)
            thresholds.append(None)
            continue
        if request.cache is None:
            request.cache = RequestCache(request.params.cache_threshold)
        caches.append(request.cache.row(row.uncond, denoiser_key))
        thresholds.append(request.cache.threshold)
    denoiser = adapter.denoiser_for(rows)
    cache = RowFirstBlockCache(denoiser, caches, thresholds, adapter.cache_row_args)
    with cache.installed():
        outputs = adapter.forward(rows)
    for row, skipped in zip(rows, cache.hits, strict=True):
        if row.request.cache is not None:
            row.request.cache.record(row.uncond, skipped)
    return outputs


def step_cache_problem(denoisers: list[torch.nn.Module]) -> str | None:
    """Why First-Block Cache cannot run on these denoisers; None when it can."""
    for denoiser in denoisers:
        blocks = transformer_blocks(denoiser)
        if len(blocks) < 2:
            return (
                f"{type(denoiser).__name__} here has {len(blocks)} transformer block(s): "
                "none after the first to skip"
            )
        for block in blocks:
            if not is_registered_block(block):
                return f"{type(block).__name__} blocks are not known to the step cache"
    return None
