"""TaylorSeer decided row by row, inside one batched transformer call.

diffusers' TaylorSeer cache (diffusers.hooks.taylorseer_cache) hooks the transformer's attention
modules. At a full step a module runs, and its output and divided differences against its output
at the last full step (up to `max_order`) become its Taylor factors; at a predict step the module
does not run: its output is the Taylor expansion at the steps elapsed since that full step.

Here each row (a request's branch, for one denoiser) keeps its own factors and step count, so a
request predicts at the same steps, with the same values, whatever it is batched with. In one
call each hooked module runs on the computing rows only (their per-row arguments sliced by name)
and the predicting rows get their expansions; a module no row computes does not run at all.

The hooked modules are diffusers' default (attention modules whose names end in `attn`, as in
FLUX, SD3, Qwen-Image and FLUX.2), or those a family names with patterns as diffusers'
`cache_identifiers` would, where its attention modules are named otherwise (Wan's and LTX's
`attn1`/`attn2`, Z-Image's `attention`): the defaults would hook none of them.

The schedule and the defaults are diffusers' (TaylorSeerCacheConfig): full steps for the first
`disable_cache_before_step` steps, then one every `cache_interval`. Factors are kept in the
module's output dtype: diffusers' default bfloat16 is the serving dtype, and on a float32 model
a bfloat16 cast would only lose what the model computed.
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks.taylorseer_cache import _TRANSFORMER_BLOCK_IDENTIFIERS, TaylorSeerCacheConfig

from omni.cache.first_block import _forward_replaced, parameter_names
from omni.cache.slicing import fit_length, row_subset
from omni.lora.rows import narrowed

CONFIG = TaylorSeerCacheConfig()  # cache_interval 5, disable_cache_before_step 3, max_order 1


def predicts(step: int, config: TaylorSeerCacheConfig = CONFIG) -> bool:
    """Whether a row's `step`-th call (from 0) predicts: diffusers' schedule, whose full steps
    after the warm-up fall at disable_cache_before_step + 1 + k * cache_interval."""
    warm_up = config.disable_cache_before_step
    if step < warm_up:
        return False
    if config.disable_cache_after_step is not None and step >= config.disable_cache_after_step:
        return False
    return (step - warm_up - 1) % config.cache_interval != 0


@dataclass(slots=True)
class TaylorRow:
    """One row's TaylorSeer state (a request's branch, for one denoiser)."""

    step: int = -1  # the row's current step: its calls on this denoiser so far, minus one
    last_full: int | None = None  # the step whose outputs the factors expand from
    # hooked module name -> one list of factors (orders 0..max_order) per module output
    factors: dict[str, list[list[torch.Tensor]]] = field(default_factory=dict)

    def advance(self) -> bool:
        """Count the row's next step; whether that step predicts."""
        self.step += 1
        return self.last_full is not None and predicts(self.step)

    @property
    def nbytes(self) -> int:
        return sum(
            factor.numel() * factor.element_size()
            for outputs in self.factors.values()
            for orders in outputs
            for factor in orders
        )


Patterns = tuple[str, ...]
_HOOKED: weakref.WeakKeyDictionary[
    torch.nn.Module, dict[Patterns, list[tuple[str, torch.nn.Module]]]
] = weakref.WeakKeyDictionary()  # found once per denoiser, not at every step


def hooked_modules(
    denoiser: torch.nn.Module, patterns: Patterns | None = None
) -> list[tuple[str, torch.nn.Module]]:
    """The modules TaylorSeer hooks, by name: those whose names fully match one of `patterns`
    (diffusers' `cache_identifiers`), by default the attention modules diffusers hooks."""
    patterns = patterns or _TRANSFORMER_BLOCK_IDENTIFIERS
    found = _HOOKED.setdefault(denoiser, {})
    if patterns not in found:
        found[patterns] = [
            (name, module)
            for name, module in denoiser.named_modules()
            if any(re.fullmatch(pattern, name) for pattern in patterns)
        ]
    return found[patterns]


def refreshed(
    previous: list[torch.Tensor] | None, output: torch.Tensor, elapsed: int, max_order: int
) -> list[torch.Tensor]:
    """Factors of a module output at a full step: the output, then divided differences against
    the previous factors over the steps elapsed, as far as the previous factors go."""
    factors = [output.clone()]  # a row of the batch's output: do not keep the whole batch alive
    if previous is None:
        return factors
    for order in range(max_order):
        if order >= len(previous) or previous[order].shape != factors[order].shape:
            # A shape change restarts the expansion, as diffusers'. (A text output's length
            # changes with the batch's longest prompt; its predictions are never read: at a
            # predict step every hooked module of the row predicts, and the text stream ends
            # unused.)
            break
        factors.append((factors[order] - previous[order]) / elapsed)
    return factors


def expanded(factors: list[torch.Tensor], elapsed: int) -> torch.Tensor:
    """The Taylor expansion `elapsed` steps after the factors' full step (summed in diffusers'
    order, so a predicted output equals theirs to the bit)."""
    output = torch.zeros_like(factors[0])
    for order, factor in enumerate(factors):
        output = output + factor * (elapsed**order / math.factorial(order))
    return output


def _as_tuple(output: Any) -> tuple[torch.Tensor, ...]:
    return (output,) if isinstance(output, torch.Tensor) else tuple(output)


class RowTaylorSeer:
    """Per-row TaylorSeer around one call of `denoiser` over `len(rows)` rows.

    rows[i] is row i's state, None for a row that does not cache (it always computes). row_args
    names the hooked modules' arguments that carry one entry per row (hidden and encoder states,
    per-row masks, per-row rotary tables); the others (a rotary table of the whole batch) are
    passed whole. patterns name the hooked modules (None: diffusers' default). present() says
    which of the call's rows a module call sees (all of them, unless First-Block Cache ran the
    block for fewer). Constructing it counts each row's step; `predicting[i]` says whether row i
    predicts.

    A module's outputs follow its hidden then encoder states (diffusers' attention processors
    return the image stream, then the text stream): a predicted text output is fitted to the
    call's text length, which padding to the batch's longest prompt makes vary with the batch,
    so that it joins the computing rows' outputs.
    """

    def __init__(
        self,
        denoiser: torch.nn.Module,
        rows: list[TaylorRow | None],
        row_args: frozenset[str],
        present: Callable[[], list[int]] | None = None,
        config: TaylorSeerCacheConfig = CONFIG,
        patterns: Patterns | None = None,
    ) -> None:
        self.modules = hooked_modules(denoiser, patterns)
        if not self.modules:
            raise NotImplementedError(f"{type(denoiser).__name__} has no modules to TaylorSeer")
        self.rows = rows
        self.row_args = row_args
        self.config = config
        everyone = list(range(len(rows)))
        self.present = present or (lambda: everyone)
        self.predicting = [row is not None and row.advance() for row in rows]

    @contextmanager
    def installed(self) -> Iterator[RowTaylorSeer]:
        with ExitStack() as stack:
            for name, module in self.modules:
                stack.enter_context(_forward_replaced(module, self._wrapped(name, module)))
            yield self
        for row, predicting in zip(self.rows, self.predicting, strict=True):
            if row is not None and not predicting:
                row.last_full = row.step  # after every module refreshed against the old one

    def _wrapped(self, name: str, module: torch.nn.Module) -> Callable:
        original = module.forward
        names = parameter_names(type(module))

        def forward(*args: Any, **kwargs: Any) -> Any:
            present = self.present()
            computing = [k for k, i in enumerate(present) if not self.predicting[i]]
            lengths = _lengths(names, args, kwargs)
            if not computing:
                return self._rebuilt([self._predicted(name, i, lengths) for i in present])
            if len(computing) == len(present):
                output = original(*args, **kwargs)
                self._refresh(name, present, _as_tuple(output))
                return output
            sub_args, sub_kwargs = row_subset(
                names, args, kwargs, self.row_args, len(present), computing
            )
            with narrowed(computing):  # per-row LoRA sees the computing rows
                outputs = _as_tuple(original(*sub_args, **sub_kwargs))
            self._refresh(name, [present[k] for k in computing], outputs)
            position = {k: p for p, k in enumerate(computing)}
            per_row = [
                tuple(o[position[k] : position[k] + 1] for o in outputs)
                if k in position
                else self._predicted(name, i, lengths)
                for k, i in enumerate(present)
            ]
            return self._rebuilt(per_row)

        return forward

    def _refresh(self, name: str, rows: list[int], outputs: tuple[torch.Tensor, ...]) -> None:
        """New factors for each computing row that caches, from its rows of the outputs."""
        for position, i in enumerate(rows):
            row = self.rows[i]
            if row is None:
                continue
            previous = row.factors.get(name)
            elapsed = 0 if row.last_full is None else row.step - row.last_full
            row.factors[name] = [
                refreshed(
                    previous[o] if previous is not None and elapsed else None,
                    output[position : position + 1],
                    elapsed,
                    self.config.max_order,
                )
                for o, output in enumerate(outputs)
            ]

    def _predicted(self, name: str, i: int, lengths: list[int]) -> tuple[torch.Tensor, ...]:
        row = self.rows[i]
        elapsed = row.step - row.last_full
        outputs = [expanded(factors, elapsed) for factors in row.factors[name]]
        for o, length in enumerate(lengths[: len(outputs)]):
            if outputs[o].dim() > 2 and outputs[o].shape[1] != length:
                outputs[o] = fit_length(outputs[o], length)
        return tuple(outputs)

    @staticmethod
    def _rebuilt(per_row: list[tuple[torch.Tensor, ...]]) -> Any:
        """The whole call's output, as the module returns it: a tensor, or a tuple of them."""
        outputs = tuple(torch.cat(column) for column in zip(*per_row, strict=True))
        return outputs[0] if len(outputs) == 1 else outputs


def _lengths(names: tuple[str, ...], args: tuple, kwargs: dict[str, Any]) -> list[int]:
    """The sequence lengths of a module call's hidden then encoder states, as far as given."""
    given = dict(zip(names, args, strict=False)) | kwargs
    lengths = []
    for name in ("hidden_states", "encoder_hidden_states"):
        value = given.get(name)
        if not isinstance(value, torch.Tensor) or value.dim() < 3:
            break
        lengths.append(value.shape[1])
    return lengths


def taylorseer_problem(
    denoisers: list[torch.nn.Module],
    row_args: frozenset[str] | None,
    patterns: Patterns | None = None,
) -> str | None:
    """Why TaylorSeer cannot run on these denoisers; None when it can."""
    if row_args is None:
        return "TaylorSeer is not wired for this family yet (which attention arguments are per row)"
    for denoiser in denoisers:
        if not hooked_modules(denoiser, patterns):
            return f"{type(denoiser).__name__} has no attention modules TaylorSeer hooks"
    return None
