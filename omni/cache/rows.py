"""A family adapter's forward with a step cache (First-Block Cache, TaylorSeer) for the rows whose
requests ask for one."""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING

import torch

from omni.cache.first_block import (
    RowCache,
    RowFirstBlockCache,
    is_registered_block,
    transformer_blocks,
)
from omni.cache.state import RequestCache
from omni.cache.taylorseer import RowTaylorSeer, TaylorRow
from omni.lora.rows import narrowed

STEP_CACHES = ("fbcache", "taylorseer")

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
        with narrowed(indices):
            group = _forward_one_shape(adapter, [rows[i] for i in indices])
        for i, output in zip(indices, group, strict=True):
            outputs[i] = output
    return outputs


def _forward_one_shape(adapter: FamilyAdapter, rows: list[Row]) -> list[torch.Tensor]:
    """One forward in which First-Block Cache rows, TaylorSeer rows and uncached rows decide
    apart: each cache only skips work for the rows whose request asked for it."""
    denoiser_key = rows[0].request.batch_key
    blocks: list[RowCache | None] = []
    thresholds: list[float | None] = []
    seers: list[TaylorRow | None] = []
    for row in rows:
        request = row.request
        kind = request.params.cache
        state = None
        if kind in STEP_CACHES:
            if request.cache is None:
                request.cache = RequestCache(kind, request.params.cache_threshold)
            state = request.cache.row(row.uncond, denoiser_key)
        blocks.append(state if kind == "fbcache" else None)
        thresholds.append(request.params.cache_threshold if kind == "fbcache" else None)
        seers.append(state if kind == "taylorseer" else None)
    denoiser = adapter.denoiser_for(rows)
    first_block = seer = None
    with ExitStack() as stack:
        if any(state is not None for state in blocks):
            first_block = RowFirstBlockCache(denoiser, blocks, thresholds, adapter.cache_row_args)
            stack.enter_context(first_block.installed())
        if any(state is not None for state in seers):
            # Inside blocks First-Block Cache runs for fewer rows, the modules see those only.
            present = None if first_block is None else (lambda: first_block._misses)
            seer = RowTaylorSeer(
                denoiser,
                seers,
                adapter.taylorseer_row_args,
                present,
                patterns=adapter.taylorseer_modules,
            )
            stack.enter_context(seer.installed())
        outputs = adapter.forward(rows)
    for i, row in enumerate(rows):
        if row.request.cache is not None:
            skipped = (first_block is not None and first_block.hits[i]) or (
                seer is not None and seer.predicting[i]
            )
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
