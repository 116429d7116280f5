"""Denoising transformers built from their published configs with random weights, their inputs
and an estimate of the FLOPs in one forward.

Full size: ``flux-dev`` (FLUX.1-dev), ``wan2.1-1.3b`` (Wan2.1-T2V-1.3B), ``wan2.2-a14b`` (one of
Wan2.2-T2V-A14B's two experts: one runs per step), ``qwen-image`` (Qwen-Image),
``z-image`` (Z-Image-Turbo) and ``sd3.5-large``. ``tiny`` and ``tiny-video`` are the
transformers of omni's built-in tiny models, so the same code runs on a CPU in seconds.

Each family's forward takes different inputs, so one module per family (flux, wan, qwen_image,
z_image, sd3) holds its configs, latent geometry, make_inputs and FLOPs estimate; the functions
here dispatch on ``Arch.family``.
"""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

import torch

from benchmarks.archs import flux, qwen_image, sd3, wan, z_image
from benchmarks.archs.base import VAE_SPATIAL, WAN_VAE_TEMPORAL, Arch, latent_frames
from benchmarks.archs.flux import FLUX_DEV
from benchmarks.archs.wan import WAN21_1_3B

__all__ = [
    "ARCH_NAMES",
    "FAMILIES",
    "FLUX_DEV",
    "FULL_SIZE",
    "VAE_SPATIAL",
    "WAN21_1_3B",
    "WAN_VAE_TEMPORAL",
    "Arch",
    "build",
    "count_parameters",
    "counted_flops",
    "family_of",
    "forward_flops",
    "get_arch",
    "latent_frames",
    "make_inputs",
    "shrink",
    "tiny_config",
]

FAMILIES: dict[str, ModuleType] = {
    "flux": flux,
    "wan": wan,
    "qwen_image": qwen_image,
    "z_image": z_image,
    "sd3": sd3,
}
# name: (family, published config, experts)
FULL_SIZE: dict[str, tuple[str, dict[str, Any], int]] = {
    "flux-dev": ("flux", flux.FLUX_DEV, 1),
    "wan2.1-1.3b": ("wan", wan.WAN21_1_3B, 1),
    "wan2.2-a14b": ("wan", wan.WAN22_A14B_EXPERT, 2),
    "qwen-image": ("qwen_image", qwen_image.QWEN_IMAGE, 1),
    "z-image": ("z_image", z_image.Z_IMAGE_TURBO, 1),
    "sd3.5-large": ("sd3", sd3.SD35_LARGE, 1),
}
ARCH_NAMES = ("tiny", "tiny-video", *FULL_SIZE)


def family_of(arch: Arch) -> ModuleType:
    return FAMILIES[arch.family]


def tiny_config(builtin: str) -> dict[str, Any]:
    from omni.models.tiny import ensure_builtin

    model_dir = ensure_builtin(builtin)
    model_class = flux.MODEL_CLASS if builtin == "omni-tiny" else wan.MODEL_CLASS
    config = dict(model_class.load_config(model_dir / "transformer"))
    return {k: v for k, v in config.items() if not k.startswith("_")}


def get_arch(name: str) -> Arch:
    if name in FULL_SIZE:
        family, config, experts = FULL_SIZE[name]
        text_len = FAMILIES[family].TEXT_LEN
        return Arch(name, family, config, text_len, is_full_size=True, num_experts=experts)
    if name == "tiny":
        return Arch(name, "flux", tiny_config("omni-tiny"), 64, False, "omni-tiny")
    if name == "tiny-video":
        return Arch(name, "wan", tiny_config("omni-tiny-video"), 512, False, "omni-tiny-video")
    raise KeyError(f"unknown arch {name!r}; known: {', '.join(ARCH_NAMES)}")


def shrink(arch: Arch, layers: int = 2, heads: int = 2, text_len: int = 16) -> Arch:
    """A copy with the same block structure but few layers and small widths: the code path of a
    full-size arch, runnable on a CPU in float32 in a second."""
    config = family_of(arch).shrink_config(arch.config, layers=layers, heads=heads)
    return replace(
        arch, name=f"{arch.name}-shrunk", config=config, text_len=text_len, is_full_size=False
    )


def build(arch: Arch, device: torch.device | str, dtype: torch.dtype, seed: int = 0):
    """The transformer with random weights, created directly on `device` in `dtype`.

    On the "meta" device nothing is allocated: good for counting parameters anywhere.
    """
    model_class = family_of(arch).MODEL_CLASS
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
    device: torch.device | str,
    dtype: torch.dtype,
) -> dict[str, Any]:
    """Random inputs for one batched forward, one timestep per sample (as omni's runner does)."""
    return family_of(arch).make_inputs(arch, batch, width, height, num_frames, device, dtype)


def forward_flops(arch: Arch, num_params: int, width: int, height: int, num_frames: int) -> float:
    """About how many FLOPs one sample's forward takes: 2 * params * tokens for the matrix
    multiplies plus the attention terms; see each family's forward_flops for which tokens."""
    return family_of(arch).forward_flops(arch, num_params, width, height, num_frames)


def counted_flops(
    arch: Arch, width: int, height: int, num_frames: int, model: torch.nn.Module | None = None
) -> float:
    """The FLOPs of one sample's forward as diffusers really runs it, counted op by op (matrix
    multiplies and attention) by torch's FlopCounterMode on a "meta" model: shapes only.

    A check on forward_flops, whose 2 * params * tokens counts every weight against every token:
    in dual-stream blocks (FLUX, SD3, Qwen-Image) each stream's weights see only their own
    tokens, and adaLN weights see one vector per sample, so that convention runs high there.
    `model`, if given, must be this arch built on "meta"; otherwise one is built here.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = model if model is not None else build(arch, "meta", torch.bfloat16)
    inputs = make_inputs(arch, 1, width, height, num_frames, "meta", torch.bfloat16)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(**inputs)
    return float(counter.get_total_flops())
