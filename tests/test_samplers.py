"""Each sampler against its diffusers scheduler over whole schedules, alone and batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from omni.flow import calculate_shift, linear_sigmas
from omni.request import GenerationParams, Request
from omni.samplers import SAMPLERS, ScheduleInputs, samplers_for
from omni.samplers.base import Sampler

WAN_UNIPC = {  # Wan2.1's shipped scheduler_config.json
    "_class_name": "UniPCMultistepScheduler",
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
    "lower_order_final": True,
    "final_sigmas_type": "zero",
}
FLUX_EULER = {  # FLUX.1-dev's
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SD3_EULER = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}
SCHEDULERS = {
    "euler": FlowMatchEulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
}
SHAPE = (1, 4, 3, 5)


def request_for(sampler: Sampler, num_steps: int, inputs: ScheduleInputs, seed: int) -> Request:
    request = Request(f"r{seed}", GenerationParams(prompt="p"), step_keys=("k",) * num_steps)
    schedule = sampler.schedule(num_steps, inputs)
    request.sampler, request.sigmas, request.timesteps = (
        sampler,
        schedule.sigmas,
        schedule.timesteps,
    )
    request.sampler_state = sampler.start(schedule)
    request.latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    return request


def model_output(seed: int, step: int, latents: torch.Tensor) -> torch.Tensor:
    """A stand-in velocity that depends on the sample, like a model's."""
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1000 * seed + step))
    return 0.7 * noise - 0.4 * latents


def diffusers_run(
    name: str, config: dict, num_steps: int, inputs: ScheduleInputs, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(final latents, sigmas, timesteps) of the diffusers scheduler itself."""
    config = {k: v for k, v in config.items() if k != "_class_name"}
    scheduler = SCHEDULERS[name].from_config(config)
    kwargs = {}
    if inputs.sigmas is not None and name != "dpm++2m":
        kwargs["sigmas"] = inputs.sigmas
    if inputs.mu is not None:
        kwargs["mu"] = inputs.mu
    scheduler.set_timesteps(None if "sigmas" in kwargs else num_steps, **kwargs)
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    for step, t in enumerate(scheduler.timesteps):
        latents = scheduler.step(model_output(seed, step, latents), t, latents).prev_sample
    return latents, scheduler.sigmas, scheduler.timesteps


CASES = [
    # (model config, pipeline inputs for n steps)
    (WAN_UNIPC, lambda n: ScheduleInputs()),
    (FLUX_EULER, lambda n: ScheduleInputs(sigmas=linear_sigmas(n), mu=calculate_shift(1024))),
    (SD3_EULER, lambda n: ScheduleInputs()),
]


@pytest.mark.parametrize("num_steps", [1, 2, 3, 8, 20, 50])
@pytest.mark.parametrize("case", range(len(CASES)), ids=["wan", "flux", "sd3"])
@pytest.mark.parametrize("name", list(SAMPLERS))
def test_each_sampler_steps_as_its_diffusers_scheduler_over_a_whole_schedule(name, case, num_steps):
    model_config, make_inputs = CASES[case]
    inputs = make_inputs(num_steps)
    _, samplers = samplers_for(model_config)
    sampler = samplers[name]
    request = request_for(sampler, num_steps, inputs, seed=num_steps)
    for step in range(num_steps):
        sampler.step([request], [model_output(num_steps, step, request.latents)])
        request.step_index += 1
    expected, sigmas, timesteps = diffusers_run(
        name, sampler.config, num_steps, inputs, seed=num_steps
    )
    assert torch.equal(request.sigmas, sigmas)
    assert torch.equal(request.timesteps, timesteps)
    assert torch.equal(request.latents, expected)  # bit for bit, in float32


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_requests_at_different_steps_update_together_as_each_alone(name):
    """One step call over requests of other lengths, progress and shapes equals each alone."""
    _, samplers = samplers_for(WAN_UNIPC)
    sampler = samplers[name]
    steps = [3, 7, 12, 20]
    together = [request_for(sampler, n, ScheduleInputs(), seed=n) for n in steps]
    alone = [request_for(sampler, n, ScheduleInputs(), seed=n) for n in steps]
    starts = [0, 1, 4, 9]  # request i joins at engine step starts[i]
    for engine_step in range(max(s + n for s, n in zip(starts, steps, strict=True))):
        live = [
            r for r, s in zip(together, starts, strict=True)
            if s <= engine_step and not r.is_denoised
        ]  # fmt: skip
        if live:
            sampler.step(live, [model_output(r.num_steps, r.step_index, r.latents) for r in live])
            for r in live:
                r.step_index += 1
    for r in alone:
        while not r.is_denoised:
            sampler.step([r], [model_output(r.num_steps, r.step_index, r.latents)])
            r.step_index += 1
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a.latents, b.latents)


def test_a_model_defaults_to_the_scheduler_it_ships_with_its_config():
    default, samplers = samplers_for(WAN_UNIPC)
    assert default == "unipc"
    assert samplers["unipc"].config["flow_shift"] == WAN_UNIPC["flow_shift"]
    # The others keep the model's shift.
    assert samplers["euler"].config["shift"] == WAN_UNIPC["flow_shift"]
    assert samplers["dpm++2m"].config["flow_shift"] == WAN_UNIPC["flow_shift"]
    default, samplers = samplers_for(FLUX_EULER)
    assert default == "euler"
    assert samplers["unipc"].config["use_dynamic_shifting"] is True


def test_a_scheduler_omni_cannot_reproduce_is_refused_at_load():
    with pytest.raises(NotImplementedError, match="no sampler for DDIMScheduler"):
        samplers_for({"_class_name": "DDIMScheduler"})
    with pytest.raises(NotImplementedError, match="flow"):
        samplers_for({**WAN_UNIPC, "use_flow_sigmas": False})
    with pytest.raises(NotImplementedError, match="order 2"):
        samplers_for({**WAN_UNIPC, "solver_order": 3})


def test_the_comparison_can_fail():
    """Another sampler's run over the same inputs is far outside the tolerance used above."""
    _, samplers = samplers_for(WAN_UNIPC)
    request = request_for(samplers["dpm++2m"], 8, ScheduleInputs(), seed=8)
    for step in range(8):
        samplers["dpm++2m"].step([request], [model_output(8, step, request.latents)])
        request.step_index += 1
    expected, _, _ = diffusers_run("unipc", samplers["unipc"].config, 8, ScheduleInputs(), seed=8)
    assert (request.latents - expected).abs().max() > 1e-3
    assert np.isfinite(request.latents.numpy()).all()
