"""--attention-backend: which attention kernel diffusers' dispatcher uses in the denoiser."""

from __future__ import annotations

import importlib.util
import logging

import torch

from omni.models.base import FamilyAdapter

logger = logging.getLogger(__name__)

DISPATCHER_NAMES = {"sdpa": "native", "flash": "flash", "xformers": "xformers"}
PACKAGES = {"flash": "flash_attn", "xformers": "xformers"}


def is_importable(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def resolve_attention_backend(name: str, device: torch.device) -> str:
    """auto -> flash-attn when importable on CUDA, else torch SDPA; explicit choices are checked."""
    if name == "auto":
        name = "flash" if device.type == "cuda" and is_importable("flash_attn") else "sdpa"
    if name in PACKAGES:
        if device.type != "cuda":
            raise ValueError(f"attention backend {name} needs a CUDA device, not {device}")
        if not is_importable(PACKAGES[name]):
            raise ValueError(
                f"attention backend {name} needs the {PACKAGES[name]} package: "
                f"pip install 'omni[gpu]', or use --attention-backend sdpa"
            )
    return name


def apply_attention_backend(adapter: FamilyAdapter, name: str) -> str:
    backend = resolve_attention_backend(name, adapter.device)
    if backend != "sdpa":  # SDPA is diffusers' default
        for module in adapter.denoisers():
            module.set_attention_backend(DISPATCHER_NAMES[backend])
    logger.debug("attention backend: %s", backend)
    return backend
