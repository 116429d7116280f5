"""UniPC multistep (bh1/bh2, data prediction) over flow sigmas: UniPCMultistepScheduler as Wan
ships it (`use_flow_sigmas`, `prediction_type="flow_prediction"`).

Every step first corrects the sample the last predictor made (UniC, using the new prediction),
then predicts the next one (UniP). Order 1 or 2; the warm-up and `lower_order_final` rules are
diffusers'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from omni.flow import check_scheduler_config
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

SIGMA_ONE_EPS = 1e-6  # diffusers nudges a first sigma of 1 down by this (log(0) otherwise)


@dataclass(frozen=True, slots=True)
class Update:
    """x_t = a * x - b * m0 - c * (rho * D1 [+ rho_t * (model_t - m0)]), D1 = (m1 - m0) / rk."""

    order: int
    a: float
    b: float
    c: float
    rk: float | None  # order 2 only
    rho: float | None  # order 2 only: the weight of D1
    rho_t: float | None = None  # corrector only: the weight of the new prediction


@dataclass(frozen=True, slots=True)
class StepPlan:
    sigma: float  # this step's sigma, for x0 = x - sigma * v
    corrector: Update | None
    predictor: Update


class UniPCSampler(Sampler):
    name = "unipc"
    scheduler_class = "UniPCMultistepScheduler"

    def __init__(self, config: dict) -> None:
        super().__init__(config)
        check_multistep_config(self.config, "UniPCMultistepScheduler")
        if not self.config.get("predict_x0", True) or self.config.get("solver_p"):
            raise NotImplementedError("UniPC is supported with predict_x0 and no solver_p")
        if self.config.get("solver_type", "bh2") not in ("bh1", "bh2"):
            raise NotImplementedError(f"UniPC solver_type {self.config['solver_type']}")
        self.plans = PlanCache(self._plan)

    def schedule(self, num_steps: int, inputs: ScheduleInputs) -> Schedule:
        c = self.config
        num_train = self.num_train_timesteps
        sigmas = inputs.sigmas
        if sigmas is None:
            sigmas = np.linspace(1, 1 / num_train, num_steps + 1)[:-1]
        sigmas = np.array(sigmas)
        if c.get("use_dynamic_shifting"):
            if inputs.mu is None:
                raise ValueError("dynamic shifting needs mu")
            sigmas = time_shift(inputs.mu, sigmas, c.get("time_shift_type", "exponential"))
        else:
            shift = c.get("flow_shift", 1.0) if inputs.shift is None else inputs.shift
            sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
        if c.get("shift_terminal"):
            one_minus = 1 - sigmas
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - c["shift_terminal"]))
        if np.fabs(sigmas[0] - 1) < SIGMA_ONE_EPS:
            sigmas[0] -= SIGMA_ONE_EPS
        timesteps = torch.from_numpy(sigmas * num_train).to(torch.int64)
        last = sigmas[-1] if c.get("final_sigmas_type", "zero") == "sigma_min" else 0
        sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        return Schedule(torch.from_numpy(sigmas), timesteps)

    def start(self, schedule: Schedule) -> MultistepState:
        return MultistepState(self.plans(schedule.sigmas))

    def _plan(self, sigmas: torch.Tensor) -> tuple[StepPlan, ...]:
        c = self.config
        solver_order = c.get("solver_order", 2)
        disabled = set(c.get("disable_corrector") or ())
        num_steps = len(sigmas) - 1
        plan: list[StepPlan] = []
        previous_order = 0
        for i in range(num_steps):
            corrector = None
            if i > 0 and i - 1 not in disabled:
                corrector = self._update(sigmas, i - 1, previous_order, corrector=True)
            order = (
                min(solver_order, num_steps - i)
                if c.get("lower_order_final", True)
                else solver_order
            )
            order = min(order, min(i, solver_order) + 1)
            plan.append(
                StepPlan(
                    scalar(sigmas[i]), corrector, self._update(sigmas, i, order, corrector=False)
                )
            )
            previous_order = order
        return tuple(plan)

    def _update(self, sigmas: torch.Tensor, s: int, order: int, *, corrector: bool) -> Update:
        """The coefficients of a step from sigmas[s] to sigmas[s + 1], as diffusers computes them
        (float32 0-d tensors, the same operations in the same order)."""
        sigma_t, sigma_s0 = sigmas[s + 1], sigmas[s]
        alpha_t = 1 - sigma_t
        lambda_s0 = log_snr(sigma_s0)
        h = log_snr(sigma_t) - lambda_s0
        rks = [(log_snr(sigmas[s - i]) - lambda_s0) / h for i in range(1, order)]
        rks = torch.stack([*rks, torch.ones(())])
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if self.config.get("solver_type", "bh2") == "bh1" else torch.expm1(hh)
        rows, b = [], []
        for k in range(1, order + 1):
            rows.append(torch.pow(rks, k - 1))
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        rk = rho = rho_t = None
        if order == 2:
            rk = scalar(rks[0])
        if corrector:
            rhos = [0.5] if order == 1 else torch.linalg.solve(torch.stack(rows), torch.stack(b))
            rho_t = scalar(rhos[-1])
            rho = scalar(rhos[0]) if order == 2 else None
        elif order == 2:
            rho = 0.5
        elif order > 2:
            raise NotImplementedError("UniPC above order 2")
        return Update(
            order,
            a=scalar(sigma_t / sigma_s0),
            b=scalar(alpha_t * h_phi_1),
            c=scalar(alpha_t * b_h),
            rk=rk,
            rho=rho,
            rho_t=rho_t,
        )

    def step(self, requests: list[Request], outputs: list[torch.Tensor]) -> None:
        states: list[MultistepState] = [r.sampler_state for r in requests]
        plans = [s.plan[r.step_index] for s, r in zip(states, requests, strict=True)]
        samples = [r.latents for r in requests]
        x0 = to_x0(samples, outputs, [p.sigma for p in plans])
        corrector_forms = [0 if p.corrector is None else p.corrector.order for p in plans]
        for order, members in groups(corrector_forms).items():
            if not order:
                continue
            corrected = solve(
                [plans[i].corrector for i in members],
                [states[i].last_sample for i in members],
                [states[i].outputs for i in members],
                [x0[i] for i in members],
            )
            for i, sample in zip(members, corrected, strict=True):
                samples[i] = (
                    sample if sample.dtype == samples[i].dtype else sample.to(samples[i].dtype)
                )
        keep = self.config.get("solver_order", 2)
        for state, sample, prediction in zip(states, samples, x0, strict=True):
            state.outputs = [*state.outputs, prediction][-keep:]
            state.last_sample = sample
        for _, members in groups([p.predictor.order for p in plans]).items():
            moved = solve(
                [plans[i].predictor for i in members],
                [samples[i] for i in members],
                [states[i].outputs for i in members],
                None,
            )
            for i, latents in zip(
                members, cast_like(moved, [samples[i] for i in members]), strict=True
            ):
                requests[i].latents = latents


def solve(
    updates: list[Update],
    xs: list[torch.Tensor],
    histories: list[list[torch.Tensor]],
    model_t: list[torch.Tensor] | None,
) -> list[torch.Tensor]:
    """One UniP (model_t None) or UniC update of the same order for several requests.

    The predictor's history ends with the prediction at x; the corrector's ends with the one
    before model_t."""
    m0 = [h[-1] for h in histories]
    x_t = scaled_difference(xs, [u.a for u in updates], m0, [u.b for u in updates])
    residual = None
    if updates[0].order == 2:
        d1 = torch._foreach_div(
            torch._foreach_sub([h[-2] for h in histories], m0), [u.rk for u in updates]
        )
        residual = torch._foreach_mul(d1, [u.rho for u in updates])
    if model_t is not None:
        newest = torch._foreach_mul(torch._foreach_sub(model_t, m0), [u.rho_t for u in updates])
        residual = newest if residual is None else torch._foreach_add(residual, newest)
    if residual is None:
        return x_t
    return torch._foreach_sub(x_t, torch._foreach_mul(residual, [u.c for u in updates]))


def time_shift(mu: float, sigmas: np.ndarray, kind: str) -> np.ndarray:
    """diffusers' time_shift with sigma 1; Python floats keep a float32 array in float32."""
    if kind == "linear":
        return mu / (mu + (1 / sigmas - 1))
    return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))


def check_multistep_config(config: dict, name: str) -> None:
    check_scheduler_config(config)
    if not config.get("use_flow_sigmas") or config.get("prediction_type") != "flow_prediction":
        raise NotImplementedError(
            f"{name} without flow sigmas and flow_prediction is not a flow-matching schedule"
        )
    if config.get("thresholding"):
        raise NotImplementedError(f"{name} with thresholding is not supported")
    if config.get("solver_order", 2) > 2:
        raise NotImplementedError(f"{name} above order 2 is not supported")
