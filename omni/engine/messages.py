"""Typed messages between the asyncio side and the engine actor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omni.request import GenerationParams, Request


# Inbox: asyncio side -> actor.
@dataclass(frozen=True, slots=True)
class AddRequest:
    """Requests admitted together: they reach the scheduler in the same step."""

    requests: tuple[Request, ...]


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Wakeup:
    """A stage finished work: the engine steps even if nothing is left to denoise."""


# Outbox: actor -> asyncio side.
@dataclass(frozen=True, slots=True)
class Progress:
    request_id: str
    step_index: int  # steps done
    num_steps: int


@dataclass(frozen=True, slots=True)
class Preview:
    """A partial image: the decode of the request's predicted clean latents mid-way."""

    request_id: str
    steps_done: int
    output: Any  # a PIL image


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: str
    params: GenerationParams  # resolved: the seed and defaults actually used
    output: Any  # a PIL image, or a video's frames
    queue_time_s: float  # arrival to first denoising step
    inference_time_s: float  # arrival to decoded output
    cache_skipped_steps: int | None = None  # steps a step cache skipped; None without one
    tokens_per_row: int = 0  # the sequence length one row of it put through the denoiser


@dataclass(frozen=True, slots=True)
class Failed:
    request_id: str
    message: str
    code: str


Event = Progress | Preview | Finished | Failed
