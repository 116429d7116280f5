"""What the two multistep solvers share: per-request history and batched linear updates.

Their coefficients depend only on a request's sigmas and step index, so `start` works them out
once per schedule (in float32 0-d tensors, in the order diffusers does, so the results match it)
and a step is a handful of multi-tensor operations over all requests whose update has the same
form, whatever their shapes or step indices.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

PLAN_CACHE_SIZE = 64  # schedules whose coefficients are kept (requests mostly share a few)


@dataclass(slots=True)
class MultistepState:
    """One request's solver history: the plan is shared, the tensors are its own."""

    plan: tuple[Any, ...]  # one coefficient record per step
    outputs: list[torch.Tensor] = field(default_factory=list)  # converted predictions, newest last
    last_sample: torch.Tensor | None = None  # the sample before the last predictor (UniPC)


class PlanCache:
    """A small LRU of per-schedule coefficient plans, keyed by the schedule's sigmas."""

    def __init__(self, build: Callable[[torch.Tensor], tuple[Any, ...]]) -> None:
        self.build = build
        self.plans: OrderedDict[Hashable, tuple[Any, ...]] = OrderedDict()

    def __call__(self, sigmas: torch.Tensor) -> tuple[Any, ...]:
        key = tuple(sigmas.tolist())
        plan = self.plans.get(key)
        if plan is None:
            plan = self.plans[key] = self.build(sigmas)
            while len(self.plans) > PLAN_CACHE_SIZE:
                self.plans.popitem(last=False)
        self.plans.move_to_end(key)
        return plan


def scalar(value: torch.Tensor | float) -> float:
    """A 0-d float32 coefficient as the Python float holding exactly its value."""
    return float(value)


def groups(forms: list[Hashable]) -> dict[Hashable, list[int]]:
    """Indices of requests by the form of their update this step (forms[i] is request i's)."""
    by_form: dict[Hashable, list[int]] = {}
    for index, form in enumerate(forms):
        by_form.setdefault(form, []).append(index)
    return by_form


def to_x0(
    samples: list[torch.Tensor], outputs: list[torch.Tensor], sigmas: list[float]
) -> list[torch.Tensor]:
    """A flow model's data prediction x0 = x - sigma * v, for many requests at once."""
    return torch._foreach_sub(samples, torch._foreach_mul(outputs, sigmas))


def scaled_difference(
    xs: list[torch.Tensor], a: list[float], ys: list[torch.Tensor], b: list[float]
) -> list[torch.Tensor]:
    """a * x - b * y for every pair."""
    return torch._foreach_sub(torch._foreach_mul(xs, a), torch._foreach_mul(ys, b))


def cast_like(values: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    return [v if v.dtype == w.dtype else v.to(w.dtype) for v, w in zip(values, like, strict=True)]
