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
    rows: slice | None  # the same rows when they are one contiguous run
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
    contiguous = rows == list(range(rows[0], rows[-1] + 1))
    run = slice(rows[0], rows[-1] + 1) if contiguous else None
    if len(set(scales)) == 1:
        return AdapterRows(weights, index, run, float(scales[0]))
    return AdapterRows(weights, index, run, torch.tensor(scales, device=device))


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
            if group.index is None:
                part = x
            elif group.rows is not None:  # one run of rows: a view, no copy
                part = x[group.rows]
            else:
                part = x.index_select(0, group.index)
            # The scale goes on the rank-r activations, not the output: r values per token.
            low = F.linear(part.to(layer.down.dtype), layer.down)
            if isinstance(group.scales, float):
                low = low * (group.scales * layer.scaling)
            else:
                shape = (-1,) + (1,) * (low.dim() - 1)
                low = low * (group.scales.to(low.dtype) * layer.scaling).view(shape)
            low = low.to(output.dtype)
            # In place, the up-projection fused into the add where the rows are one run: the
            # Linear's output is fresh, and a copy per adapter would cost a whole output's worth
            # of memory traffic per adapter and layer.
            if group.index is None or group.rows is not None:
                target = output if group.index is None else output[group.rows]
                if target.is_contiguous():
                    flat = target.view(-1, target.shape[-1])
                    flat.addmm_(low.reshape(-1, low.shape[-1]), layer.up.t())
                else:
                    target.add_(F.linear(low, layer.up))
            else:
                output.index_add_(0, group.index, F.linear(low, layer.up))
        return output


def install_hooks(transformer: torch.nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """A LoraHook on every nn.Linear of `transformer`, named as its state dict names it."""
    return [
        module.register_forward_hook(LoraHook(name))
        for name, module in transformer.named_modules()
        if isinstance(module, torch.nn.Linear)
    ]
