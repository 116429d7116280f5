"""Tiny LoRA adapters made for the tiny models, saved the way diffusers saves them."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

FLUX_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "proj_mlp", "ff.net.2"]
WAN_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.2"]


def make_lora(
    pipeline_class: type,
    model_dir: Path,
    out_dir: Path,
    seed: int,
    rank: int = 4,
    alpha: float = 8.0,
    targets: list[str] = FLUX_TARGETS,
) -> Path:
    """A random LoRA (lora_alpha != r, so the alpha/r scaling shows) on the model's transformer,
    saved with the pipeline class's `save_lora_weights`, its PEFT config as metadata."""
    transformer = pipeline_class.from_pretrained(model_dir).transformer
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    transformer.add_adapter(config)
    with torch.no_grad():  # PEFT's init leaves B small: make each adapter clearly visible
        for name, parameter in transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 1.0)
    layers = get_peft_model_state_dict(transformer)
    pipeline_class.save_lora_weights(
        out_dir,
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return out_dir / "pytorch_lora_weights.safetensors"
