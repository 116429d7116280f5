"""Qwen-Image (QwenImageTransformer2DModel): 60 dual-stream MMDiT blocks attending jointly over
the Qwen2.5-VL text states and the packed image tokens.

Text length. QwenImagePipeline drops the 34-token chat template and keeps each prompt's real
length (up to 1024), padding a batch to its longest prompt. We use 128 text tokens with every
token valid, about a detailed prompt; a mask that is all ones is what the pipeline turns into
`encoder_hidden_states_mask=None`, so we pass None, which keeps SDPA on its unmasked kernels.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import QwenImageTransformer2DModel

from benchmarks.archs.base import Arch, patch_grid, random_source, scaled_axes, timestep_fractions

MODEL_CLASS = QwenImageTransformer2DModel
# Qwen/Qwen-Image transformer/config.json; the same values are the class's defaults.
QWEN_IMAGE = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
TEXT_LEN = 128


def hidden(config: dict[str, Any]) -> int:
    return config["num_attention_heads"] * config["attention_head_dim"]


def num_blocks(config: dict[str, Any]) -> int:
    return config["num_layers"]


def latent_tokens(config: dict[str, Any], width: int, height: int, num_frames: int = 1) -> int:
    """The pipeline packs 2x2 latent pixels into one 64-channel token."""
    rows, columns = patch_grid(width, height, config["patch_size"])
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
    """Packed latents, text states, each sample's (frames, rows, columns) for RoPE and a
    timestep in [0, 1] per sample (the pipeline divides t by 1000), as QwenImagePipeline does."""
    randn = random_source(device, dtype)
    rows, columns = patch_grid(width, height, arch.config["patch_size"])
    return {
        "hidden_states": randn(batch, rows * columns, arch.config["in_channels"]),
        "encoder_hidden_states": randn(batch, arch.text_len, arch.config["joint_attention_dim"]),
        "encoder_hidden_states_mask": None,  # all tokens valid: see the module docstring
        "timestep": timestep_fractions(batch).to(device=device, dtype=dtype),
        "img_shapes": [[(1, rows, columns)]] * batch,
        "guidance": None,  # guidance_embeds is false: true CFG runs a second row instead
        "return_dict": False,
    }


def forward_flops(
    arch: Arch, num_params: int, width: int, height: int, num_frames: int = 1
) -> float:
    """2 * params * tokens for the matrix multiplies plus 4 * blocks * tokens^2 * hidden for the
    joint attention, tokens counting the text as well as the image."""
    tokens = latent_tokens(arch.config, width, height) + arch.text_len
    return 2 * num_params * tokens + 4 * num_blocks(arch.config) * tokens**2 * hidden(arch.config)


def shrink_config(config: dict[str, Any], layers: int = 2, heads: int = 2) -> dict[str, Any]:
    """The same dual-stream blocks and 3-axis RoPE with 32-wide heads and narrow text states."""
    return config | {
        "num_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": 32,
        "joint_attention_dim": 32,
        "axes_dims_rope": tuple(scaled_axes(config["axes_dims_rope"], 32)),
    }
