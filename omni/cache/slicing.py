"""Per-row tensors across batches: a call's arguments for some of its rows (what the step caches
run a module on when only some rows compute), and a cached text tensor at another batch's text
length."""

from __future__ import annotations

from typing import Any

import torch


def row_subset(
    names: tuple[str, ...],
    args: tuple,
    kwargs: dict[str, Any],
    row_args: frozenset[str],
    batch: int,
    rows: list[int],
) -> tuple[tuple, dict[str, Any]]:
    """A call's arguments for some of its `batch` rows only: the arguments named in row_args
    sliced (a tensor with one entry per row, or a tuple of them, as per-row rotary tables
    (cos, sin)), the others shared by all rows and passed whole."""

    def pick(name: str, value: Any) -> Any:
        if name not in row_args:
            return value
        if isinstance(value, torch.Tensor) and len(value) == batch:
            return value.index_select(0, torch.tensor(rows, device=value.device))
        if isinstance(value, tuple):
            return tuple(pick(name, item) for item in value)
        return value

    sub_args = tuple(pick(name, value) for name, value in zip(names, args, strict=False))
    return sub_args, {name: pick(name, value) for name, value in kwargs.items()}


def fit_length(tail: torch.Tensor, length: int) -> torch.Tensor:
    """A cached text tensor (a residual, a Taylor factor) at this step's padded text length.

    Text is padded at the end to the longest prompt in the batch, which changes with the batch;
    the padded positions are masked out of attention, so what they hold does not matter."""
    if tail.shape[1] == length:
        return tail
    if tail.shape[1] > length:
        return tail[:, :length]
    padding = tail.new_zeros(tail.shape[0], length - tail.shape[1], *tail.shape[2:])
    return torch.cat([tail, padding], dim=1)
