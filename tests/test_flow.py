from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from omni.flow import (
    calculate_shift,
    cfg_combine,
    cfg_combine_all,
    euler_step,
    euler_steps,
    flow_sigmas,
    linear_sigmas,
    scheduler_default_sigmas,
    step_sizes,
)

FLUX_DEV = dict(
    base_image_seq_len=256,
    base_shift=0.5,
    max_image_seq_len=4096,
    max_shift=1.15,
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
)


@pytest.mark.parametrize("num_steps", [1, 2, 8, 28, 50])
@pytest.mark.parametrize("image_seq_len", [16, 1024, 4096, 9216])
def test_dynamic_shift_schedule_is_diffusers_schedule(num_steps, image_seq_len):
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_DEV)
    mu = calculate_shift(image_seq_len)
    scheduler.set_timesteps(sigmas=linear_sigmas(num_steps), mu=mu)
    ours = flow_sigmas(
        linear_sigmas(num_steps).astype(np.float32), scheduler.config, image_seq_len=image_seq_len
    )
    assert torch.equal(ours, scheduler.sigmas)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 12.0])
@pytest.mark.parametrize("num_steps", [2, 10, 40])
def test_static_shift_default_schedule_is_diffusers_schedule(shift, num_steps):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(num_steps)
    base = scheduler_default_sigmas(num_steps, scheduler.config)
    assert torch.equal(flow_sigmas(base, scheduler.config), scheduler.sigmas)


def test_shift_terminal_and_linear_time_shift_match_diffusers():
    config = dict(FLUX_DEV, shift_terminal=0.1, time_shift_type="linear")
    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    scheduler.set_timesteps(sigmas=linear_sigmas(12), mu=calculate_shift(2048))
    ours = flow_sigmas(linear_sigmas(12).astype(np.float32), scheduler.config, image_seq_len=2048)
    assert torch.equal(ours, scheduler.sigmas)


def test_request_flow_shift_overrides_static_shift():
    base = linear_sigmas(10).astype(np.float32)
    config = {"shift": 1.0}
    assert not torch.equal(flow_sigmas(base, config, shift=5.0), flow_sigmas(base, config))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    scheduler.set_timesteps(sigmas=base)
    assert torch.equal(flow_sigmas(base, config, shift=5.0), scheduler.sigmas)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_euler_step_is_diffusers_step(dtype):
    scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_DEV)
    scheduler.set_timesteps(sigmas=linear_sigmas(4), mu=calculate_shift(64))
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 64, generator=generator).to(dtype)
    ours = latents
    for index, t in enumerate(scheduler.timesteps):
        velocity = torch.randn(2, 16, 64, generator=generator).to(dtype)
        latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        sigmas = scheduler.sigmas
        ours = euler_step(ours, velocity, sigmas[index], sigmas[index + 1])
        assert ours.dtype == latents.dtype
        assert torch.equal(ours, latents)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_batched_euler_and_cfg_equal_the_one_request_steps_bit_for_bit(dtype):
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 16, 8), (1, 4, 8), (1, 36, 8)]
    latents = [torch.randn(s, generator=generator).to(dtype) for s in shapes]
    cond = [torch.randn(s, generator=generator).to(dtype) for s in shapes]
    uncond = [torch.randn(s, generator=generator).to(dtype) for s in shapes]
    sigmas = torch.cat(
        [torch.rand(6, generator=generator).sort(descending=True).values, torch.zeros(1)]
    )
    indices, scales = [0, 3, 5], [4.0, 2.5, 7.0]

    velocities = cfg_combine_all(cond, uncond, scales)
    sizes = step_sizes(sigmas)
    moved = euler_steps(latents, velocities, [sizes[i] for i in indices])

    for i, index in enumerate(indices):
        velocity = cfg_combine(cond[i], uncond[i], scales[i])
        assert torch.equal(velocities[i], velocity)
        expected = euler_step(latents[i], velocity, sigmas[index], sigmas[index + 1])
        assert torch.equal(moved[i], expected)
