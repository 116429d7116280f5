"""First-Block Cache decided row by row, inside one batched transformer call.

Every step runs the transformer's first block for all rows. Each row compares its first-block
residual with its own residual at its last computed step (relative mean absolute difference,
diffusers' FirstBlockCache rule). A row under its threshold skips the remaining blocks: its
output is the first block's plus the residual those blocks added at its last computed step.
The other rows run the remaining blocks as a smaller batch, and refresh their caches. A row's
decision reads only its own tensors, so it does not depend on what it is batched with.

The blocks are found and read as diffusers' hooks find them (its registry of transformer block
classes says where hidden and encoder states sit in each block's arguments and outputs), and
are wrapped only for the duration of one call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry

from omni.cache.slicing import fit_length, row_subset
from omni.lora.rows import narrowed


@dataclass(slots=True)
class RowCache:
    """One row's cache (a request's branch, for one denoiser): what its last computed step left."""

    head_residual: torch.Tensor | None = None  # first block output - input, [1, S, D]
    tail_hidden: torch.Tensor | None = None  # remaining blocks' residual on the hidden states
    tail_encoder: torch.Tensor | None = None  # ... and on the encoder states, if blocks return them

    @property
    def is_warm(self) -> bool:
        return self.head_residual is not None and self.tail_hidden is not None

    @property
    def nbytes(self) -> int:
        tensors = (self.head_residual, self.tail_hidden, self.tail_encoder)
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def transformer_blocks(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks diffusers' FirstBlockCache would hook, in the order the forward runs them."""
    blocks: list[torch.nn.Module] = []
    for name, child in module.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, torch.nn.ModuleList):
            blocks.extend(child)
    return blocks


@functools.cache
def parameter_names(module_class: type) -> tuple[str, ...]:
    """A module class's forward parameters, without self: read once per class, not per call."""
    return tuple(inspect.signature(module_class.forward).parameters)[1:]


def is_registered_block(block: torch.nn.Module) -> bool:
    """Whether diffusers' block registry says where this block keeps its states."""
    try:
        TransformerBlockRegistry.get(type(block))
    except ValueError:
        return False
    return True


def relative_change(residual: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """mean|residual - previous| / mean|previous|: diffusers' FirstBlockCache measure."""
    return (residual - previous).abs().mean() / previous.abs().mean()


class RowFirstBlockCache:
    """Per-row First-Block Cache around one call of `transformer` over `len(caches)` rows.

    caches[i] is row i's cache, None for a row that does not cache (it always computes).
    thresholds[i] is row i's threshold. row_args names the block arguments that carry one entry
    per row (hidden and encoder states, timestep embeddings, per-row masks); the others are
    shared by all rows and passed whole. After the call, `hits[i]` says whether row i skipped.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        caches: list[RowCache | None],
        thresholds: list[float | None],
        row_args: frozenset[str],
    ) -> None:
        self.blocks = transformer_blocks(transformer)
        if len(self.blocks) < 2:
            raise NotImplementedError(f"{type(transformer).__name__} has too few blocks to cache")
        self.caches = caches
        self.thresholds = thresholds
        self.row_args = row_args
        self.hits: list[bool] = [False] * len(caches)
        self._misses: list[int] = list(range(len(caches)))
        self._head_hidden: torch.Tensor | None = None
        self._head_encoder: torch.Tensor | None = None

    @contextmanager
    def installed(self) -> Iterator[RowFirstBlockCache]:
        with ExitStack() as stack:
            last = len(self.blocks) - 1
            for index, block in enumerate(self.blocks):
                metadata = TransformerBlockRegistry.get(type(block))
                wrap = self._head if index == 0 else self._tail
                stack.enter_context(_forward_replaced(block, wrap(block, metadata, index == last)))
            yield self

    # The first block -----------------------------------------------------------------------

    def _head(self, block: torch.nn.Module, meta: TransformerBlockMetadata, _: bool) -> Callable:
        original = block.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            hidden_in = _hidden_argument(block, meta, args, kwargs)
            output = original(*args, **kwargs)
            hidden, encoder = _states(output, meta)
            residual = hidden - hidden_in
            self.hits = self._decide(residual)
            self._misses = [i for i, hit in enumerate(self.hits) if not hit]
            for i in self._misses:
                if self.caches[i] is not None:
                    self.caches[i].head_residual = residual[i : i + 1].clone()
            self._head_hidden, self._head_encoder = hidden, encoder
            if not any(self.hits):
                return output
            hit_rows = [i for i, hit in enumerate(self.hits) if hit]
            hidden = _add_rows(hidden, hit_rows, [self.caches[i].tail_hidden for i in hit_rows])
            tails = [self.caches[i].tail_encoder for i in hit_rows]
            if encoder is not None and all(tail is not None for tail in tails):
                # (a last block that returns no encoder states, as SD3's, leaves them unused)
                encoder = _add_rows(encoder, hit_rows, tails)
            return _rebuilt(output, meta, hidden, encoder)

        return forward

    def _decide(self, residual: torch.Tensor) -> list[bool]:
        """Which rows skip: a warm cache whose residual moved by at most the row's threshold."""
        candidates = [
            i for i, cache in enumerate(self.caches) if cache is not None and cache.is_warm
        ]
        if not candidates:
            return [False] * len(self.caches)
        changes = torch.stack(
            [relative_change(residual[i : i + 1], self.caches[i].head_residual) for i in candidates]
        ).tolist()  # one device sync for the whole batch
        hits = [False] * len(self.caches)
        for i, change in zip(candidates, changes, strict=True):
            hits[i] = not change > self.thresholds[i]  # diffusers computes when change > threshold
        return hits

    # The remaining blocks ------------------------------------------------------------------

    def _tail(self, block: torch.nn.Module, meta: TransformerBlockMetadata, last: bool) -> Callable:
        original = block.forward
        names = parameter_names(type(block))

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not self._misses:
                return _passed_through(block, args, kwargs, meta)
            if len(self._misses) == len(self.hits):
                output = original(*args, **kwargs)
                if last:
                    self._store_tails(output, meta, self._misses)
                return output
            rows = torch.tensor(self._misses, device=self._head_hidden.device)
            batch = len(self.hits)
            sub_args, sub_kwargs = row_subset(
                names, args, kwargs, self.row_args, batch, self._misses
            )
            with narrowed(self._misses):  # per-row LoRA sees the computing rows
                output = original(*sub_args, **sub_kwargs)
            if last:
                self._store_tails(output, meta, self._misses)
            return _scattered(block, args, kwargs, meta, output, rows)

        return forward

    def _store_tails(self, output: Any, meta: TransformerBlockMetadata, rows: list[int]) -> None:
        """What the remaining blocks added, for each computing row that caches."""
        hidden, encoder = _states(output, meta)
        for position, i in enumerate(rows):
            cache = self.caches[i]
            if cache is None:
                continue
            cache.tail_hidden = hidden[position : position + 1] - self._head_hidden[i : i + 1]
            if encoder is not None:
                head = self._head_encoder[i : i + 1]
                cache.tail_encoder = encoder[position : position + 1] - head


# Block arguments and outputs ---------------------------------------------------------------


def _hidden_argument(
    block: torch.nn.Module, meta: TransformerBlockMetadata, args: tuple, kwargs: dict[str, Any]
) -> torch.Tensor:
    """The block's hidden-states input: by the registry's name, else its first argument (some
    blocks, Z-Image's, call it `x`)."""
    names = parameter_names(type(block))
    name = meta.hidden_states_argument_name
    if name not in names:
        return kwargs[names[0]] if names[0] in kwargs else args[0]
    return meta._get_parameter_from_args_kwargs(name, args, kwargs)


def _states(output: Any, meta: TransformerBlockMetadata) -> tuple[torch.Tensor, Any]:
    if not isinstance(output, tuple):
        return output, None
    encoder_index = meta.return_encoder_hidden_states_index
    encoder = None if encoder_index is None else output[encoder_index]
    return output[meta.return_hidden_states_index], encoder


def _rebuilt(output: Any, meta: TransformerBlockMetadata, hidden: Any, encoder: Any) -> Any:
    if not isinstance(output, tuple):
        return hidden
    values = list(output)
    values[meta.return_hidden_states_index] = hidden
    if meta.return_encoder_hidden_states_index is not None:
        values[meta.return_encoder_hidden_states_index] = encoder
    return tuple(values)


def _add_rows(states: torch.Tensor, rows: list[int], tails: list[torch.Tensor]) -> torch.Tensor:
    """`states` with tails[k] added to row rows[k]."""
    index = torch.tensor(rows, device=states.device)
    tails = [fit_length(tail, states.shape[1]) for tail in tails]
    moved = states.index_select(0, index) + torch.cat(tails)
    return states.index_copy(0, index, moved)


def _passed_through(
    block: torch.nn.Module, args: tuple, kwargs: dict[str, Any], meta: TransformerBlockMetadata
) -> Any:
    """What a skipped block returns: its input states, in its output layout (as diffusers')."""
    hidden = _hidden_argument(block, meta, args, kwargs)
    if meta.return_encoder_hidden_states_index is None:
        return hidden
    encoder = meta._get_parameter_from_args_kwargs(
        meta.encoder_hidden_states_argument_name, args, kwargs
    )
    values: list[Any] = [None, None]
    values[meta.return_hidden_states_index] = hidden
    values[meta.return_encoder_hidden_states_index] = encoder
    return tuple(values)


def _scattered(
    block: torch.nn.Module,
    args: tuple,
    kwargs: dict[str, Any],
    meta: TransformerBlockMetadata,
    output: Any,
    rows: Any,
) -> Any:
    """The whole batch's output: the computing rows' new states, the others' inputs unchanged."""
    full = _passed_through(block, args, kwargs, meta)
    hidden_in, encoder_in = _states(full, meta)
    hidden, encoder = _states(output, meta)
    hidden = hidden_in.index_copy(0, rows, hidden)
    if encoder is not None:
        encoder = encoder_in.index_copy(0, rows, encoder)
    return _rebuilt(full, meta, hidden, encoder)


@contextmanager
def _forward_replaced(module: torch.nn.Module, forward: Callable) -> Iterator[None]:
    """`module.forward` is `forward` inside the block (an instance attribute shadows the
    class's method, which nn.Module.__call__ looks up)."""
    module.forward = forward
    try:
        yield
    finally:
        del module.forward
