"""Stable Diffusion 3.5 (SD3Transformer2DModel): MMDiT blocks attending jointly over the text
tokens and the image patches.

Text length. StableDiffusion3Pipeline concatenates the 77 CLIP-L/G token states (zero-padded to
4096 wide) with the T5-XXL states padded to max_sequence_length=256: 333 joint text tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SD3Transformer2DModel

from benchmarks.archs.base import VAE_SPATIAL, Arch, patch_grid, random_source, timestep_fractions

MODEL_CLASS = SD3Transformer2DModel
# stabilityai/stable-diffusion-3.5-large transformer/config.json
SD35_LARGE = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 38,
    "attention_head_dim": 64,
    "num_attention_heads": 38,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 2432,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
}
TEXT_LEN = 77 + 256


def hidden(config: dict[str, Any]) -> int:
    return config["num_attention_heads"] * config["attention_head_dim"]


def num_blocks(config: dict[str, Any]) -> int:
    return config["num_layers"]


def latent_tokens(config: dict[str, Any], width: int, height: int, num_frames: int = 1) -> int:
    """2x2 patches of the 8x-downsampled latents; at most pos_embed_max_size per side."""
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
    """4-D latents, 333 joint text states, the pooled CLIP vectors and a timestep in [0, 1000]
    per sample, as StableDiffusion3Pipeline passes them."""
    randn = random_source(device, dtype)
    return {
        "hidden_states": randn(
            batch, arch.config["in_channels"], height // VAE_SPATIAL, width // VAE_SPATIAL
        ),
        "encoder_hidden_states": randn(batch, arch.text_len, arch.config["joint_attention_dim"]),
        "pooled_projections": randn(batch, arch.config["pooled_projection_dim"]),
        "timestep": (timestep_fractions(batch) * 1000).to(device=device, dtype=dtype),
        "return_dict": False,
    }


def forward_flops(
    arch: Arch, num_params: int, width: int, height: int, num_frames: int = 1
) -> float:
    """2 * params * tokens for the matrix multiplies plus 4 * blocks * tokens^2 * hidden for the
    joint attention, tokens counting the 333 text tokens as well as the image patches."""
    tokens = latent_tokens(arch.config, width, height) + arch.text_len
    return 2 * num_params * tokens + 4 * num_blocks(arch.config) * tokens**2 * hidden(arch.config)


def shrink_config(config: dict[str, Any], layers: int = 2, heads: int = 2) -> dict[str, Any]:
    """The same MMDiT blocks (the last one context-pre-only), qk RMSNorm and positional table
    with 32-wide heads; the caption projection must stay as wide as the blocks."""
    return config | {
        "num_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": 32,
        "joint_attention_dim": 32,
        "caption_projection_dim": heads * 32,
        "pooled_projection_dim": 32,
    }
