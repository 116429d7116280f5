"""What every sampler is: a schedule maker and a batched update over per-request state.

A sampler object holds only its scheduler config; everything that changes while a request
denoises (its step sizes, a multistep solver's past predictions) is created by `start` and lives
on the request as `sampler_state`, like its latents. That keeps requests free to join and leave
the batch at any step, whatever solver they use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from omni.request import Request


@dataclass(frozen=True, slots=True)
class Schedule:
    """A request's noise levels, as its diffusers scheduler's set_timesteps leaves them."""

    sigmas: torch.Tensor  # float32 on the CPU, num_steps + 1 values ending with the final sigma
    timesteps: torch.Tensor  # num_steps values: the `t` the pipeline hands its transformer

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


@dataclass(frozen=True, slots=True)
class ScheduleInputs:
    """What a pipeline passes to set_timesteps besides the step count.

    sigmas: the custom (unshifted) sigmas a Flux-style pipeline hands the scheduler; None when
    the pipeline lets the scheduler make its own. mu: the resolution-dependent shift of models
    with dynamic shifting. shift: a static shift replacing the config's (Wan's flow_shift).
    sigma_min: a pipeline's override of the scheduler's lowest default sigma (Z-Image sets 0).
    """

    sigmas: np.ndarray | None = None
    mu: float | None = None
    shift: float | None = None
    sigma_min: float | None = None


class Sampler(ABC):
    name: ClassVar[str]  # what a request's `sampler` field says
    scheduler_class: ClassVar[str]  # the diffusers scheduler whose maths it reproduces

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"

    @abstractmethod
    def schedule(self, num_steps: int, inputs: ScheduleInputs) -> Schedule:
        """The sigmas and timesteps of a request with this many steps."""

    @abstractmethod
    def start(self, schedule: Schedule) -> Any:
        """A fresh per-request state for this schedule."""

    @abstractmethod
    def step(self, requests: list[Request], outputs: list[torch.Tensor]) -> None:
        """One update for every request at its own step: outputs[i] is request i's (guided)
        model output. Sets each request's latents and moves its state; the step index is the
        scheduler's to advance. Requests share a few multi-tensor operations, whatever their
        shapes and step indices."""

    @property
    def num_train_timesteps(self) -> int:
        return self.config.get("num_train_timesteps", 1000)


def flow_alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t and sigma_t of a flow-matching noise level, as diffusers' multistep solvers say."""
    return 1 - sigma, sigma


def log_snr(sigma: torch.Tensor) -> torch.Tensor:
    """lambda_t = log(alpha_t) - log(sigma_t), in the sigma's float32."""
    alpha, sigma = flow_alpha_sigma(sigma)
    return torch.log(alpha) - torch.log(sigma)
