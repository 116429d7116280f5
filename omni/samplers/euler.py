"""Flow-matching Euler: FlowMatchEulerDiscreteScheduler's schedule and step."""

from __future__ import annotations

import numpy as np
import torch

from omni.flow import euler_steps, flow_sigmas, scheduler_default_sigmas, step_sizes
from omni.request import Request
from omni.samplers.base import Sampler, Schedule, ScheduleInputs


class EulerSampler(Sampler):
    name = "euler"
    scheduler_class = "FlowMatchEulerDiscreteScheduler"

    def schedule(self, num_steps: int, inputs: ScheduleInputs) -> Schedule:
        config = self.config if inputs.shift is None else {**self.config, "shift": inputs.shift}
        base = inputs.sigmas
        if base is not None:
            base = np.asarray(base).astype(np.float32)  # as set_timesteps(sigmas=...) does
        else:
            base = scheduler_default_sigmas(num_steps, config, sigma_min=inputs.sigma_min)
        sigmas = flow_sigmas(base, config, mu=inputs.mu)
        return Schedule(sigmas, sigmas[:-1] * self.num_train_timesteps)

    def start(self, schedule: Schedule) -> list[float]:
        return step_sizes(schedule.sigmas)

    def step(self, requests: list[Request], outputs: list[torch.Tensor]) -> None:
        sizes = [r.sampler_state[r.step_index] for r in requests]
        moved = euler_steps([r.latents for r in requests], outputs, sizes)
        for request, latents in zip(requests, moved, strict=True):
            request.latents = latents
