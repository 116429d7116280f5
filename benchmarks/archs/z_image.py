"""Z-Image (ZImageTransformer2DModel): a single-stream DiT. Two refiner blocks run on the image
tokens alone (noise_refiner) and two on the caption tokens alone (context_refiner); then 30
blocks attend over the joined [image, caption] sequence.

Caption length. ZImagePipeline keeps only each prompt's real Qwen3 tokens (chat template
included, at most 512) and the transformer pads every sequence to a multiple of 32. We use 128
caption tokens for every sample, about a detailed prompt: a multiple of 32, and equal lengths,
so no padding and no attention mask, as for a batch of equally long prompts.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ZImageTransformer2DModel

from benchmarks.archs.base import (
    VAE_SPATIAL,
    Arch,
    patch_grid,
    random_source,
    scaled_axes,
    timestep_fractions,
)

MODEL_CLASS = ZImageTransformer2DModel
# Tongyi-MAI/Z-Image-Turbo transformer/config.json (axes_lens differs from the class default).
Z_IMAGE_TURBO = {
    "all_patch_size": (2,),
    "all_f_patch_size": (1,),
    "in_channels": 16,
    "dim": 3840,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "n_heads": 30,
    "n_kv_heads": 30,
    "norm_eps": 1e-5,
    "qk_norm": True,
    "cap_feat_dim": 2560,
    "rope_theta": 256.0,
    "t_scale": 1000.0,
    "axes_dims": [32, 48, 48],
    "axes_lens": [1536, 512, 512],
}
TEXT_LEN = 128
SEQ_MULTIPLE = 32  # the transformer pads image and caption sequences to multiples of this


def hidden(config: dict[str, Any]) -> int:
    return config["dim"]


def num_blocks(config: dict[str, Any]) -> int:
    """The blocks over the joint sequence (the refiners each see one modality)."""
    return config["n_layers"]


def latent_tokens(config: dict[str, Any], width: int, height: int, num_frames: int = 1) -> int:
    """Image tokens, with the padding to a multiple of 32 the transformer adds."""
    rows, columns = patch_grid(width, height, config["all_patch_size"][0])
    return -(-rows * columns // SEQ_MULTIPLE) * SEQ_MULTIPLE


def make_inputs(
    arch: Arch,
    batch: int,
    width: int,
    height: int,
    num_frames: int,
    device: torch.device | str,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Lists of per-sample (channels, 1, H/8, W/8) latents and caption states, and t in [0, 1]
    per sample rising towards the clean image (the pipeline passes (1000 - t) / 1000)."""
    randn = random_source(device, dtype)
    channels = arch.config["in_channels"]
    latents = [
        randn(channels, 1, height // VAE_SPATIAL, width // VAE_SPATIAL) for _ in range(batch)
    ]
    captions = [randn(arch.text_len, arch.config["cap_feat_dim"]) for _ in range(batch)]
    return {
        "x": latents,
        "t": (1 - timestep_fractions(batch)).to(device=device, dtype=dtype),
        "cap_feats": captions,
        "return_dict": False,
    }


def refiner_matmul_params(config: dict[str, Any]) -> int:
    """Token-wise weights of one refiner block: q, k, v, out and the SwiGLU feed-forward."""
    dim = config["dim"]
    return 4 * dim * dim + 3 * dim * int(dim / 3 * 8)


def forward_flops(
    arch: Arch, num_params: int, width: int, height: int, num_frames: int = 1
) -> float:
    """2 * params * tokens over image + caption tokens, less the refiners' share (each runs on
    one modality), plus attention: 4 * tokens^2 * dim per joint block and per refiner block
    over its own modality."""
    latent, text = latent_tokens(arch.config, width, height), arch.text_len
    refiners, dim = arch.config["n_refiner_layers"], arch.config["dim"]
    matmuls = 2 * (num_params - refiners * refiner_matmul_params(arch.config)) * (latent + text)
    joint = 4 * num_blocks(arch.config) * (latent + text) ** 2 * dim
    refined = 4 * refiners * (latent**2 + text**2) * dim
    return matmuls + joint + refined


def shrink_config(config: dict[str, Any], layers: int = 2, heads: int = 2) -> dict[str, Any]:
    """The same refiners, joint blocks and 3-axis RoPE with 32-wide heads and narrow captions."""
    return config | {
        "n_layers": layers,
        "n_refiner_layers": 1,
        "n_heads": heads,
        "n_kv_heads": heads,
        "dim": heads * 32,
        "cap_feat_dim": 32,
        "axes_dims": scaled_axes(config["axes_dims"], 32),
    }
