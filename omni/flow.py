"""Flow-matching maths as small pure functions.

They reproduce diffusers' FlowMatchEulerDiscreteScheduler (sigma schedule with static or dynamic
shift, the Euler step) without its per-call state, so every request can carry its own schedule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

UNSUPPORTED_SIGMA_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """The resolution-dependent shift `mu`: linear in the number of image tokens."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


def config_shift(config: Mapping[str, Any], image_seq_len: int) -> float:
    """`calculate_shift` with the line a scheduler config (or its defaults) gives."""
    return calculate_shift(
        image_seq_len,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )


def check_scheduler_config(config: Mapping[str, Any]) -> None:
    for option in UNSUPPORTED_SIGMA_OPTIONS:
        if config.get(option):
            raise NotImplementedError(f"scheduler option {option} is not supported by omni yet")
    if config.get("invert_sigmas") or config.get("stochastic_sampling"):
        raise NotImplementedError(
            "inverted or stochastic flow-matching schedules are not supported"
        )


def linear_sigmas(num_steps: int) -> np.ndarray:
    """The unshifted sigmas Flux-family pipelines hand to the scheduler, in their float64.

    FlowMatchEulerDiscreteScheduler rounds them to float32 first; UniPC takes them as they are."""
    return np.linspace(1.0, 1.0 / num_steps, num_steps)


def scheduler_default_sigmas(
    num_steps: int, config: Mapping[str, Any], *, sigma_min: float | None = None
) -> np.ndarray:
    """The unshifted sigmas the scheduler makes itself when a pipeline passes none (Wan does this).

    Its lowest sigma is the training schedule's last one, already shifted once when the shift is
    static, so such schedules are shifted twice at their low end: reproduced as is. A pipeline
    may set the scheduler's `sigma_min` first (Z-Image sets 0): `sigma_min` replaces it.
    """
    num_train = config.get("num_train_timesteps", 1000)
    if sigma_min is None:
        low = torch.tensor(1.0 / num_train, dtype=torch.float32)
        if not config.get("use_dynamic_shifting", False):
            shift = config.get("shift", 1.0)
            low = shift * low / (1 + (shift - 1) * low)
        sigma_min = low.item()
    return np.linspace(num_train, sigma_min * num_train, num_steps) / num_train


def flow_sigmas(
    base: np.ndarray,
    config: Mapping[str, Any],
    *,
    image_seq_len: int | None = None,
    mu: float | None = None,
    shift: float | None = None,
) -> torch.Tensor:
    """Shift `base` sigmas as FlowMatchEulerDiscreteScheduler.set_timesteps does; append a final 0.

    `config` is that scheduler's config. With dynamic shifting `mu` (or `image_seq_len`, from
    which the config's own line gives `mu`) sets the shift; otherwise `shift` (a request's
    flow_shift) overrides the config's static shift. Returns float32 of length len(base) + 1.
    """
    sigmas = base
    if config.get("use_dynamic_shifting", False):
        if mu is None and image_seq_len is None:
            raise ValueError("dynamic shifting needs mu or the image sequence length")
        if mu is None:
            mu = config_shift(config, image_seq_len)
        if config.get("time_shift_type", "exponential") == "linear":
            sigmas = mu / (mu + (1 / sigmas - 1))
        else:
            sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    else:
        static = config.get("shift", 1.0) if shift is None else shift
        sigmas = static * sigmas / (1 + (static - 1) * sigmas)
    terminal = config.get("shift_terminal")
    if terminal:
        one_minus = 1 - sigmas
        sigmas = 1 - one_minus / (one_minus[-1] / (1 - terminal))
    sigmas = torch.from_numpy(np.asarray(sigmas)).to(torch.float32)
    return torch.cat([sigmas, torch.zeros(1)])


def model_timesteps(sigmas: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The `timestep` a diffusers transformer takes for these sigmas (its 0-1 convention).

    diffusers builds t = sigma * 1000 in float32, casts it to the latents' dtype and divides by
    1000; doing the same keeps the engine bit-compatible with its pipelines.
    """
    return (sigmas * 1000).to(dtype) / 1000


def euler_step(
    latents: torch.Tensor, velocity: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor
) -> torch.Tensor:
    """x_{t-1} = x_t + (sigma_next - sigma) * v, accumulated in float32 like diffusers."""
    return (latents.to(torch.float32) + (sigma_next - sigma) * velocity).to(velocity.dtype)


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: move from the unconditional prediction towards the conditional."""
    return uncond + scale * (cond - uncond)


def step_sizes(sigmas: torch.Tensor) -> list[float]:
    """sigma_next - sigma for every step, in float32 like diffusers, as Python floats."""
    sigmas = sigmas.detach().to("cpu", torch.float32)
    return (sigmas[1:] - sigmas[:-1]).tolist()


def euler_steps(
    latents: list[torch.Tensor], velocities: list[torch.Tensor], sizes: list[float]
) -> list[torch.Tensor]:
    """`euler_step` for a whole batch of requests of any shapes, in two multi-tensor operations.

    sizes[i] is request i's sigma_next - sigma. As in `euler_step`, the step size is rounded to
    the velocity's dtype before the product (a 0-d float32 tensor times a bfloat16 one is
    computed in bfloat16), and the sum is taken in float32 and rounded once.
    """
    if velocities and velocities[0].dtype != torch.float32:
        sizes = torch.tensor(sizes, dtype=velocities[0].dtype).tolist()
    moved = torch._foreach_add(latents, torch._foreach_mul(velocities, sizes))
    pairs = zip(moved, velocities, strict=True)
    return [x if x.dtype == v.dtype else x.to(v.dtype) for x, v in pairs]


def cfg_combine_all(
    cond: list[torch.Tensor], uncond: list[torch.Tensor], scales: list[float]
) -> list[torch.Tensor]:
    """`cfg_combine` for many requests at once: uncond + scale * (cond - uncond)."""
    guided = torch._foreach_mul(torch._foreach_sub(cond, uncond), scales)
    return torch._foreach_add(uncond, guided)
