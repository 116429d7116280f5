"""DPM-Solver++ 2M over flow sigmas: DPMSolverMultistepScheduler with `use_flow_sigmas`,
`prediction_type="flow_prediction"`, `algorithm_type="dpmsolver++"`, `solver_order=2`.

The scheduler makes its own flow sigmas (a pipeline's custom sigmas are not taken); a model with
dynamic shifting gets the static shift exp(mu), as set_timesteps(mu=...) does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from omni.request import Request
from omni.samplers.base import Sampler, Schedule, ScheduleInputs, log_snr
from omni.samplers.multistep import (
    MultistepState,
    PlanCache,
    cast_like,
    groups,
    scalar,
    scaled_difference,
    to_x0,
)
from omni.samplers.unipc import check_multistep_config

MAX_STEPS_FOR_LOWER_ORDER_FINAL = 15  # diffusers' "small number of steps" rule


@dataclass(frozen=True, slots=True)
class StepPlan:
    """x_t = a * x - b * m0 [- d * (m0 - m1) * inv_r0]: first order when `d` is None."""

    sigma: float
    a: float
    b: float
    inv_r0: float | None = None
    d: float | None = None


class DPMSolverSampler(Sampler):
    name = "dpm++2m"
    scheduler_class = "DPMSolverMultistepScheduler"

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        check_multistep_config(self.config, "DPMSolverMultistepScheduler")
        if self.config.get("algorithm_type", "dpmsolver++") != "dpmsolver++":
            raise NotImplementedError("DPM-Solver is supported as dpmsolver++ only")
        if self.config.get("solver_type", "midpoint") not in ("midpoint", "heun"):
            raise NotImplementedError(f"DPM-Solver solver_type {self.config['solver_type']}")
        for option in ("use_lu_lambdas", "variance_type"):
            if self.config.get(option):
                raise NotImplementedError(f"DPM-Solver option {option} is not supported")
        self.plans = PlanCache(self._plan)

    def schedule(self, num_steps: int, inputs: ScheduleInputs) -> Schedule:
        c = self.config
        num_train = self.num_train_timesteps
        shift = c.get("flow_shift", 1.0) if inputs.shift is None else inputs.shift
        if c.get("use_dynamic_shifting"):
            if inputs.mu is None:
                raise ValueError("dynamic shifting needs mu")
            shift = np.exp(inputs.mu)
        sigmas = 1.0 - np.linspace(1, 1 / num_train, num_steps + 1)
        sigmas = np.flip(shift * sigmas / (1 + (shift - 1) * sigmas))[:-1].copy()
        timesteps = torch.from_numpy(sigmas * num_train).to(torch.int64)
        if c.get("final_sigmas_type", "zero") != "zero":
            raise NotImplementedError("DPM-Solver over flow sigmas ends at zero in omni")
        sigmas = np.concatenate([sigmas, [0]]).astype(np.float32)
        return Schedule(torch.from_numpy(sigmas), timesteps)

    def start(self, schedule: Schedule) -> MultistepState:
        return MultistepState(self.plans(schedule.sigmas))

    def _plan(self, sigmas: torch.Tensor) -> tuple[StepPlan, ...]:
        c = self.config
        num_steps = len(sigmas) - 1
        plan = []
        for i in range(num_steps):
            lower_order_final = i == num_steps - 1 and (
                c.get("euler_at_final", False)
                or (
                    c.get("lower_order_final", True) and num_steps < MAX_STEPS_FOR_LOWER_ORDER_FINAL
                )
                or c.get("final_sigmas_type", "zero") == "zero"
            )
            first = c.get("solver_order", 2) == 1 or i == 0 or lower_order_final
            plan.append(self._coefficients(sigmas, i, first))
        return tuple(plan)

    def _coefficients(self, sigmas: torch.Tensor, i: int, first: bool) -> StepPlan:
        """diffusers' first- and second-order dpmsolver++ updates, scalars in float32."""
        sigma_t, sigma_s0 = sigmas[i + 1], sigmas[i]
        alpha_t = 1 - sigma_t
        h = log_snr(sigma_t) - log_snr(sigma_s0)
        a = scalar(sigma_t / sigma_s0)
        b = scalar(alpha_t * (torch.exp(-h) - 1.0))
        if first:
            return StepPlan(scalar(sigma_s0), a, b)
        h_0 = log_snr(sigma_s0) - log_snr(sigmas[i - 1])
        inv_r0 = scalar(1.0 / (h_0 / h))
        if self.config.get("solver_type", "midpoint") == "midpoint":
            d = scalar(0.5 * (alpha_t * (torch.exp(-h) - 1.0)))
        else:
            d = -scalar(alpha_t * ((torch.exp(-h) - 1.0) / h + 1.0))
        return StepPlan(scalar(sigma_s0), a, b, inv_r0, d)

    def step(self, requests: list[Request], outputs: list[torch.Tensor]) -> None:
        states: list[MultistepState] = [r.sampler_state for r in requests]
        plans = [s.plan[r.step_index] for s, r in zip(states, requests, strict=True)]
        samples = [r.latents for r in requests]
        x0 = to_x0(samples, outputs, [p.sigma for p in plans])
        for state, prediction in zip(states, x0, strict=True):
            state.outputs = [*state.outputs, prediction][-2:]
        for second, members in groups([p.d is not None for p in plans]).items():
            chosen = [plans[i] for i in members]
            x = [samples[i].to(torch.float32) for i in members]
            m0 = [x0[i] for i in members]
            x_t = scaled_difference(x, [p.a for p in chosen], m0, [p.b for p in chosen])
            if second:
                m1 = [states[i].outputs[-2] for i in members]
                d1 = torch._foreach_mul(torch._foreach_sub(m0, m1), [p.inv_r0 for p in chosen])
                x_t = torch._foreach_sub(x_t, torch._foreach_mul(d1, [p.d for p in chosen]))
            for i, latents in zip(members, cast_like(x_t, m0), strict=True):
                requests[i].latents = latents
