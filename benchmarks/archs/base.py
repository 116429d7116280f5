"""What every family module shares: the Arch record, the latent geometry and random inputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

VAE_SPATIAL = 8  # every family's VAE downsamples 8x in space; Wan's also 4x in time
WAN_VAE_TEMPORAL = 4


@dataclass(frozen=True, slots=True)
class Arch:
    """One denoising transformer: its family (the module under benchmarks.archs that knows its
    inputs and FLOPs), the diffusers config it is built from and the text length it sees."""

    name: str
    family: str  # "flux", "wan", "qwen_image", "z_image" or "sd3"
    config: dict[str, Any]
    text_len: int
    is_full_size: bool
    builtin_model: str | None = None  # an omni built-in whose transformer this is
    num_experts: int = 1  # Wan2.2 A14B: two, one per noise range; a step runs one of them

    @property
    def hidden(self) -> int:
        from benchmarks.archs import family_of

        return family_of(self).hidden(self.config)

    @property
    def num_blocks(self) -> int:
        """Blocks that attend over the whole (joint) sequence."""
        from benchmarks.archs import family_of

        return family_of(self).num_blocks(self.config)

    def latent_tokens(self, width: int, height: int, num_frames: int = 1) -> int:
        """Tokens the transformer sees for one image or video (text excluded)."""
        from benchmarks.archs import family_of

        return family_of(self).latent_tokens(self.config, width, height, num_frames)


def latent_frames(num_frames: int) -> int:
    """Wan's VAE keeps the first frame and packs each further 4 frames into one latent frame."""
    return (num_frames - 1) // WAN_VAE_TEMPORAL + 1


def patch_grid(width: int, height: int, patch: int = 2) -> tuple[int, int]:
    """(rows, columns) of transformer tokens: the VAE's 8x stride times the 2x2 patches."""
    return height // (VAE_SPATIAL * patch), width // (VAE_SPATIAL * patch)


def random_source(device: torch.device | str, dtype: torch.dtype) -> Callable[..., torch.Tensor]:
    """randn(*shape) drawn on the CPU from a fixed seed, so every device sees the same inputs."""
    generator = torch.Generator("cpu").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    return randn


def timestep_fractions(batch: int) -> torch.Tensor:
    """One noise level per sample, spread over the schedule: omni batches requests at different
    steps into one forward, so a benchmark must not pass one shared timestep."""
    return torch.linspace(0.9, 0.1, batch)


def scaled_axes(axes: tuple[int, ...] | list[int], head_dim: int) -> list[int]:
    """RoPE axis widths rescaled to a new head width, each kept even as rotary pairs need."""
    total = sum(axes)
    scaled = [max(2, 2 * round(a * head_dim / total / 2)) for a in axes]
    scaled[-1] += head_dim - sum(scaled)
    return scaled
