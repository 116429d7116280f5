"""Wan2.1 / Wan2.2 (WanTransformer3DModel): self-attention over the video tokens, then
cross-attention to the UMT5 text states, in every block.

Wan2.2 T2V A14B is a mixture of two such 14 B experts split by noise level (`transformer` for
high noise, `transformer_2` below `boundary_ratio`); each step runs exactly one, so the per-step
arch is one expert with `num_experts=2` recorded for whoever writes the pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanTransformer3DModel

from benchmarks.archs.base import (
    VAE_SPATIAL,
    Arch,
    latent_frames,
    patch_grid,
    random_source,
    timestep_fractions,
)

MODEL_CLASS = WanTransformer3DModel
WAN21_1_3B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
# Wan-AI/Wan2.2-T2V-A14B-Diffusers: transformer/ and transformer_2/ share this config.
WAN22_A14B_EXPERT = WAN21_1_3B | {"num_attention_heads": 40, "ffn_dim": 13824, "num_layers": 40}
WAN22_BOUNDARY_RATIO = 0.875  # text-to-video, as model_index.json ships it
TEXT_LEN = 512  # WanPipeline pads UMT5 states to max_sequence_length=512 (zeros past the prompt)


def hidden(config: dict[str, Any]) -> int:
    return config["num_attention_heads"] * config["attention_head_dim"]


def num_blocks(config: dict[str, Any]) -> int:
    return config["num_layers"]


def latent_tokens(config: dict[str, Any], width: int, height: int, num_frames: int = 1) -> int:
    rows, columns = patch_grid(width, height)
    return latent_frames(num_frames) * rows * columns


def make_inputs(
    arch: Arch,
    batch: int,
    width: int,
    height: int,
    num_frames: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """5-D video latents, a timestep in [0, 1000] per sample and 512 text states, as
    WanPipeline passes them to either expert."""
    randn = random_source(device, dtype)
    return {
        "hidden_states": randn(
            batch,
            arch.config["in_channels"],
            latent_frames(num_frames),
            height // VAE_SPATIAL,
            width // VAE_SPATIAL,
        ),
        "timestep": (timestep_fractions(batch) * 1000).to(device=device, dtype=dtype),
        "encoder_hidden_states": randn(batch, arch.text_len, arch.config["text_dim"]),
        "return_dict": False,
    }


def text_side_params(config: dict[str, Any]) -> int:
    """Weights that see the text tokens instead of the video tokens: the text embedder and
    every block's cross-attention key and value projections."""
    dim = hidden(config)
    return num_blocks(config) * 2 * dim * dim + config["text_dim"] * dim + dim * dim


def forward_flops(
    arch: Arch, num_params: int, width: int, height: int, num_frames: int = 1
) -> float:
    """2 * params * tokens, each weight against the tokens it sees (video, or text for the
    cross-attention keys and values), plus self-attention over the video tokens (4 * blocks *
    tokens^2 * hidden) and cross-attention to the text (4 * blocks * tokens * text_len * hidden).
    """
    latent = latent_tokens(arch.config, width, height, num_frames)
    blocks, dim = num_blocks(arch.config), hidden(arch.config)
    text_params = text_side_params(arch.config)
    matmuls = 2 * (num_params - text_params) * latent + 2 * text_params * arch.text_len
    self_attention = 4 * blocks * latent**2 * dim
    cross_attention = 4 * blocks * latent * arch.text_len * dim
    return matmuls + self_attention + cross_attention


def shrink_config(config: dict[str, Any], layers: int = 1, heads: int = 2) -> dict[str, Any]:
    """The same block structure (cross-attn norm, qk norm, 3-D RoPE) with small widths."""
    return config | {
        "num_layers": layers,
        "num_attention_heads": heads,
        "attention_head_dim": 24,  # RoPE splits a head into frame/row/column thirds
        "ffn_dim": 64,
        "text_dim": 32,
        "freq_dim": 32,
    }
