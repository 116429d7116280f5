"""A full-size pipeline directory with random weights, for serving benchmarks without downloads.

    python -m benchmarks.random_model --arch flux-dev --output /tmp/flux-dev-random

The denoising transformer (the bulk of the compute) and the VAE have their published full-size
configs; the text encoders keep the published output widths (CLIP 768, T5 4096, 512 tokens)
but have one narrow layer, so prompt encoding costs next to nothing. On a GPU that is a few
percent of a real request's time. The outputs are noise; the timings are what matters.

``sd3.5-large``, ``qwen-image`` and ``z-image`` are assembled in ``benchmarks.random_families``
(text encoders of the published output widths, published VAEs).

``wan2.2-a14b`` writes Wan2.2-T2V-A14B's layout: ``transformer`` (high noise) and
``transformer_2`` (low noise), two full-size 14 B experts with different random weights, and
``boundary_ratio`` 0.875 in model_index.json, with Wan2.1's VAE as that checkpoint ships.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    UniPCMultistepScheduler,
    WanPipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from benchmarks.archs import Arch, build, get_arch
from benchmarks.archs.wan import WAN22_BOUNDARY_RATIO
from benchmarks.random_families import SERVING_DEFAULTS as FAMILY_DEFAULTS
from benchmarks.random_families import family_pipeline
from omni.models.base import SERVING_DEFAULTS_FILE
from omni.models.tiny import build_clip_tokenizer, build_t5_tokenizer

TEXT_LEN = 512
FLUX_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
FLUX_SCHEDULER = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
SERVING_DEFAULTS = {
    "flux": {"width": 1024, "height": 1024, "num_inference_steps": 28},
    "wan": {"width": 832, "height": 480, "num_frames": 33, "fps": 16, "num_inference_steps": 30},
    # Wan2.2 A14B's published example: 720p, 81 frames at 16 fps, 40 steps, CFG 4.0 / 3.0
    "wan2.2-a14b": {
        "width": 1280,
        "height": 720,
        "num_frames": 81,
        "fps": 16,
        "num_inference_steps": 40,
        "guidance_scale": 4.0,
        "guidance_scale_2": 3.0,
    },
}
ARCHS = ("flux-dev", "wan2.1-1.3b", "wan2.2-a14b", "sd3.5-large", "qwen-image", "z-image")


def narrow_t5_config(vocab_size: int, pad_id: int, eos_id: int) -> dict:
    """One narrow layer that still emits 4096-wide states, as T5-XXL / UMT5-XXL do."""
    return {
        "vocab_size": vocab_size,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 256,
        "num_layers": 1,
        "num_heads": 1,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": pad_id,
        "eos_token_id": eos_id,
        "decoder_start_token_id": pad_id,
    }


def flux_pipeline(transformer: torch.nn.Module, dtype: torch.dtype) -> FluxPipeline:
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer(TEXT_LEN)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=256,
            projection_dim=768,
            num_hidden_layers=1,
            num_attention_heads=12,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    t5_values = narrow_t5_config(
        len(tokenizer_2), tokenizer_2.pad_token_id, tokenizer_2.eos_token_id
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=AutoencoderKL(**FLUX_VAE).to(dtype),
        text_encoder=clip.to(dtype),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(T5Config(**t5_values)).to(dtype),
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )


def wan_pipeline(
    transformer: torch.nn.Module,
    dtype: torch.dtype,
    transformer_2: torch.nn.Module | None = None,
    boundary_ratio: float | None = None,
    device: torch.device | str = "cpu",
) -> WanPipeline:
    """Wan2.1's layout, or Wan2.2 A14B's with `transformer_2` and `boundary_ratio`; the text
    encoder and VAE are made on `device` ("meta" to allocate nothing)."""
    tokenizer = build_t5_tokenizer(TEXT_LEN)
    values = narrow_t5_config(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    with torch.device(device):
        text_encoder = UMT5EncoderModel(UMT5Config(**values)).to(dtype)
        vae = AutoencoderKLWan().to(dtype)  # the defaults are Wan2.1's VAE, as A14B ships
    return WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=boundary_ratio,
    )


def random_pipeline(arch: Arch, device: torch.device | str, dtype: torch.dtype) -> Any:
    """The pipeline with random weights; on the "meta" device it allocates nothing, so its
    layout can be checked without 28 B parameters."""
    transformer = build(arch, device, dtype)
    if arch.family == "flux":
        return flux_pipeline(transformer, dtype)
    if arch.family in FAMILY_DEFAULTS:
        return family_pipeline(arch, transformer, dtype)
    # text encoder and VAE on the CPU as before, except where nothing may be allocated
    small_parts = "meta" if torch.device(device).type == "meta" else "cpu"
    if arch.num_experts == 1:
        return wan_pipeline(transformer, dtype, device=small_parts)
    # another seed: a real checkpoint's two experts differ too
    transformer_2 = build(arch, device, dtype, seed=1)
    return wan_pipeline(transformer, dtype, transformer_2, WAN22_BOUNDARY_RATIO, small_parts)


def write_random_model(arch: Arch, output: Path, device: torch.device, dtype: torch.dtype) -> Path:
    pipeline = random_pipeline(arch, device, dtype)
    output.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(output, safe_serialization=True)
    defaults = {**SERVING_DEFAULTS, **FAMILY_DEFAULTS}
    defaults = defaults.get(arch.name) or defaults[arch.family]
    (output / SERVING_DEFAULTS_FILE).write_text(json.dumps(defaults, indent=2) + "\n")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, default="flux-dev")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("full-size random models are built on a GPU (FLUX.1-dev is 12 B params)")
    dtype = getattr(torch, args.dtype)
    path = write_random_model(get_arch(args.arch), args.output, torch.device("cuda"), dtype)
    print(path)


if __name__ == "__main__":
    main()
