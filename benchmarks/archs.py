"""Denoising transformers built from their published configs with random weights, their inputs
and an estimate of the FLOPs in one forward.

``flux-dev`` is FLUX.1-dev's FluxTransformer2DModel and ``wan2.1-1.3b`` Wan2.1-T2V-1.3B's
WanTransformer3DModel; ``tiny`` and ``tiny-video`` are the transformers of omni's built-in tiny
models, so the same code runs on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from diffusers import FluxTransformer2DModel, WanTransformer3DModel

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
VAE_SPATIAL = 8  # both families' VAEs downsample 8x in space; Wan's also 4x in time
WAN_VAE_TEMPORAL = 4


@dataclass(frozen=True, slots=True)
class Arch:
    name: str
    family: Literal["flux", "wan"]
    config: dict[str, Any]
    text_len: int
    is_full_size: bool
    builtin_model: str | None = None  # an omni built-in whose transformer this is

    @property
    def hidden(self) -> int:
        return self.config["num_attention_heads"] * self.config["attention_head_dim"]

    @property
    def num_blocks(self) -> int:
        if self.family == "flux":
            return self.config["num_layers"] + self.config["num_single_layers"]
        return self.config["num_layers"]

    def latent_tokens(self, width: int, height: int, num_frames: int = 1) -> int:
        """Tokens the transformer sees for one image or video (text excluded)."""
        patches = (height // (VAE_SPATIAL * 2)) * (width // (VAE_SPATIAL * 2))
        if self.family == "flux":
            return patches
        return latent_frames(num_frames) * patches


def latent_frames(num_frames: int) -> int:
    return (num_frames - 1) // WAN_VAE_TEMPORAL + 1


def tiny_config(builtin: str) -> dict[str, Any]:
    from omni.models.tiny import ensure_builtin

    model_dir = ensure_builtin(builtin)
    model_class = FluxTransformer2DModel if builtin == "omni-tiny" else WanTransformer3DModel
    config = dict(model_class.load_config(model_dir / "transformer"))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def get_arch(name: str) -> Arch:
    if name == "flux-dev":
        return Arch(name, "flux", FLUX_DEV, text_len=512, is_full_size=True)
    if name == "wan2.1-1.3b":
        return Arch(name, "wan", WAN21_1_3B, text_len=512, is_full_size=True)
    if name == "tiny":
        return Arch(name, "flux", tiny_config("omni-tiny"), 64, False, "omni-tiny")
    if name == "tiny-video":
        return Arch(name, "wan", tiny_config("omni-tiny-video"), 512, False, "omni-tiny-video")
    raise KeyError(f"unknown arch {name!r}; known: {', '.join(ARCH_NAMES)}")


ARCH_NAMES = ("tiny", "tiny-video", "flux-dev", "wan2.1-1.3b")


def build(arch: Arch, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
    """The transformer with random weights, created directly on `device` in `dtype`.

    On the "meta" device nothing is allocated: good for counting parameters anywhere.
    """
    model_class = FluxTransformer2DModel if arch.family == "flux" else WanTransformer3DModel
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            return model_class(**arch.config).eval()
    finally:
        torch.set_default_dtype(previous)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_inputs(
    arch: Arch,
    batch: int,
    width: int,
    height: int,
    num_frames: int,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Random inputs for one batched forward, one timestep per sample (as omni's runner does)."""
    generator = torch.Generator("cpu").manual_seed(0)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device=device, dtype=dtype)

    timestep_fraction = torch.linspace(0.9, 0.1, batch)
    if arch.family == "wan":
        return {
            "hidden_states": randn(
                batch,
                arch.config["in_channels"],
                latent_frames(num_frames),
                height // VAE_SPATIAL,
                width // VAE_SPATIAL,
            ),
            "timestep": (timestep_fraction * 1000).to(device=device, dtype=dtype),
            "encoder_hidden_states": randn(batch, arch.text_len, arch.config["text_dim"]),
            "return_dict": False,
        }
    rows, columns = height // (VAE_SPATIAL * 2), width // (VAE_SPATIAL * 2)
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
        "timestep": timestep_fraction.to(device=device, dtype=dtype),
        "guidance": guidance,
        "txt_ids": torch.zeros(arch.text_len, 3, device=device, dtype=dtype),
        "img_ids": image_ids.reshape(-1, 3).to(device=device, dtype=dtype),
        "return_dict": False,
    }


def forward_flops(arch: Arch, num_params: int, width: int, height: int, num_frames: int) -> float:
    """About how many FLOPs one sample's forward takes.

    2 * params * tokens for the matrix multiplies, plus 4 * blocks * tokens^2 * hidden for
    attention (QK^T and AV). FLUX attends jointly over image and text tokens; Wan attends over
    video tokens and cross-attends to the text (4 * blocks * tokens * text_len * hidden).
    """
    latent = arch.latent_tokens(width, height, num_frames)
    if arch.family == "flux":
        tokens = latent + arch.text_len
        return 2 * num_params * tokens + 4 * arch.num_blocks * tokens**2 * arch.hidden
    self_attention = 4 * arch.num_blocks * latent**2 * arch.hidden
    cross_attention = 4 * arch.num_blocks * latent * arch.text_len * arch.hidden
    return 2 * num_params * latent + self_attention + cross_attention
