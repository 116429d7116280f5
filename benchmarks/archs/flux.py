"""FLUX.1 (FluxTransformer2DModel): 19 double-stream then 38 single-stream blocks, all of them
attending jointly over the T5 text tokens and the image tokens."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel

from benchmarks.archs.base import Arch, patch_grid, random_source, scaled_axes, timestep_fractions

MODEL_CLASS = FluxTransformer2DModel
FLUX_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
TEXT_LEN = 512  # FluxPipeline pads T5 prompts to max_sequence_length=512


def hidden(config: dict[str, Any]) -> int:
    return config["num_attention_heads"] * config["attention_head_dim"]


def num_blocks(config: dict[str, Any]) -> int:
    return config["num_layers"] + config["num_single_layers"]


def latent_tokens(config: dict[str, Any], width: int, height: int, num_frames: int = 1) -> int:
    """The pipeline packs 2x2 latent pixels into one token (patch_size 1 on packed latents)."""
    rows, columns = patch_grid(width, height)
    return rows * columns


def make_inputs(
    arch: Arch,
    batch: int,
    width: int,
    height: int,
    num_frames: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Packed latents, T5 states, the CLIP pooled vector, position ids and a timestep in [0, 1]
    per sample, as FluxPipeline passes them."""
    randn = random_source(device, dtype)
    rows, columns = patch_grid(width, height)
    image_ids = torch.zeros(rows, columns, 3)
    image_ids[..., 1] += torch.arange(rows)[:, None]
    image_ids[..., 2] += torch.arange(columns)[None, :]
    guidance = None
    if arch.config.get("guidance_embeds"):
        guidance = torch.full((batch,), 3.5, device=device, dtype=torch.float32)
    return {
        "hidden_states": randn(batch, rows * columns, arch.config["in_channels"]),
        "encoder_hidden_states": randn(batch, arch.text_len, arch.config["joint_attention_dim"]),
        "pooled_projections": randn(batch, arch.config["pooled_projection_dim"]),
        "timestep": timestep_fractions(batch).to(device=device, dtype=dtype),
        "guidance": guidance,
        "txt_ids": torch.zeros(arch.text_len, 3, device=device, dtype=dtype),
        "img_ids": image_ids.reshape(-1, 3).to(device=device, dtype=dtype),
        "return_dict": False,
    }


def forward_flops(
    arch: Arch, num_params: int, width: int, height: int, num_frames: int = 1
) -> float:
    """2 * params * tokens for the matrix multiplies, plus 4 * blocks * tokens^2 * hidden for
    attention (QK^T and AV), every block attending jointly over image and text tokens."""
    tokens = latent_tokens(arch.config, width, height) + arch.text_len
    return 2 * num_params * tokens + 4 * num_blocks(arch.config) * tokens**2 * hidden(arch.config)


def shrink_config(config: dict[str, Any], layers: int = 1, heads: int = 2) -> dict[str, Any]:
    """The same structure with `layers` blocks of each kind, 32-wide heads and narrow inputs."""
    return config | {
        "num_layers": layers,
        "num_single_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": 32,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "axes_dims_rope": tuple(scaled_axes(config["axes_dims_rope"], 32)),
    }
