"""A diffusers pipeline with its scheduler swapped for the one a request's sampler reproduces."""

from __future__ import annotations

from typing import Any

import diffusers

from omni.samplers import samplers_for


def use_sampler(pipe: Any, sampler: str | None) -> Any:
    """Swap `pipe.scheduler` for the diffusers class of `sampler`, configured as omni configures
    that sampler for this model; None or the shipped one leaves the scheduler in place."""
    default, samplers = samplers_for(dict(pipe.scheduler.config))
    if sampler is None or sampler == default:
        return pipe
    chosen = samplers[sampler]
    pipe.scheduler = getattr(diffusers, chosen.scheduler_class).from_config(chosen.config)
    return pipe
