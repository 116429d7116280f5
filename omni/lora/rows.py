"""Per-row LoRA in one forward: the base Linear runs once for every row, then each adapter adds
`scale * (x A^T) B^T` to the rows that carry it (a segmented matmul: rows grouped by adapter).

The runner says which adapters each row carries before the forward (`assigned`); a step cache that
runs a block for only some rows says which (`narrowed`), so rows stay rows. The hook on each
Linear reads the innermost assignment. State is per thread: each forward thread has its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from omni.lora.weights import LoraWeights

RowStack = tuple[tuple["LoraWeights", float], ...]  # one row's adapters and their scales


@dataclass(frozen=True, slots=True)
class AdapterRows:
    weights: LoraWeights
    index: torch.Tensor | None  # the rows carrying it; None: every row, in order
    scales: torch.Tensor | float  # one per row, or one for all


@dataclass(slots=True)
class RowAssignment:
    """The adapters of each row of the modules' current batch."""

    per_row: list[RowStack]
    _groups: dict[torch.device, list[AdapterRows]] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.per_row)

    def groups(self, device: torch.device) -> list[AdapterRows]:
        """Rows grouped by adapter, as device tensors built once per forward."""
        if device not in self._groups:
            by_adapter: dict[int, tuple[LoraWeights, list[int], list[float]]] = {}
            for row, stack in enumerate(self.per_row):
                for weights, scale in stack:
                    if scale == 0:  # adds nothing: skip its matmuls
                        continue
                    group = by_adapter.setdefault(id(weights), (weights, [], []))
                    group[1].append(row)
                    group[2].append(scale)
            self._groups[device] = [
                _adapter_rows(weights, rows, scales, self.num_rows, device)
                for weights, rows, scales in by_adapter.values()
            ]
        return self._groups[device]


def _adapter_rows(
    weights: LoraWeights, rows: list[int], scales: list[float], num_rows: int, device: torch.device
) -> AdapterRows:
    index = None if rows == list(range(num_rows)) else torch.tensor(rows, device=device)
    if len(set(scales)) == 1:
        return AdapterRows(weights, index, float(scales[0]))
    return AdapterRows(weights, index, torch.tensor(scales, device=device))


_local = threading.local()


def _stack() -> list[RowAssignment | None]:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def current() -> RowAssignment | None:
    stack = _stack()
    return stack[-1] if stack else None


@contextmanager
def assigned(per_row: Sequence[RowStack]) -> Iterator[None]:
    """The adapters of each row of the forwards run inside (CFG rows carry their request's)."""
    stack = _stack()
    stack.append(RowAssignment(list(per_row)) if any(per_row) else None)
    try:
        yield
    finally:
        stack.pop()


@contextmanager
def narrowed(positions: Sequence[int]) -> Iterator[None]:
    """Only these rows (positions in the current batch) run inside: a step cache's subset."""
    outer = current()
    stack = _stack()
    stack.append(None if outer is None else RowAssignment([outer.per_row[i] for i in positions]))
    try:
        yield
    finally:
        stack.pop()


class LoraHook:
    """A forward hook on one nn.Linear of the transformer: adds each row's adapters' deltas."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(
        self, module: torch.nn.Linear, args: tuple, output: torch.Tensor
    ) -> torch.Tensor | None:
        assignment = current()
        if assignment is None:
            return None
        x = args[0]
        for group in assignment.groups(x.device):
            layer = group.weights.layers.get(self.name)
            if layer is None:
                continue
            if x.shape[0] != assignment.num_rows:
                raise RuntimeError(
                    f"LoRA layer {self.name} saw {x.shape[0]} rows where the forward has "
                    f"{assignment.num_rows}: its caller runs a subset without narrowing the rows"
                )
            part = x if group.index is None else x.index_select(0, group.index)
            delta = F.linear(F.linear(part.to(layer.down.dtype), layer.down), layer.up)
            if isinstance(group.scales, float):
                delta = delta * (group.scales * layer.scaling)
            else:
                shape = (-1,) + (1,) * (delta.dim() - 1)
                delta = delta * (group.scales.to(delta.dtype) * layer.scaling).view(shape)
            delta = delta.to(output.dtype)
            output = (
                output + delta if group.index is None else output.index_add(0, group.index, delta)
            )
        return output
