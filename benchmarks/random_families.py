"""Random-weight pipelines for the image families beyond FLUX: SD3.5, Qwen-Image, Z-Image.

Each keeps what the denoiser sees at its published size: the text encoders emit the widths
the transformer takes (CLIP-L 768 + CLIP-G 1280 and T5 4096 for SD3.5, Qwen2.5-VL 3584 for
Qwen-Image, Qwen3 2560 for Z-Image) from one or two narrow layers, and the VAEs have their
published configs, so serving timings are those of the real model minus the text encoder.
A shrunk arch (benchmarks.archs.shrink) gets text encoders of its own widths and a narrow VAE,
so the same code writes a servable model on a CPU in seconds.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    StableDiffusion3Pipeline,
    ZImagePipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3Config,
    Qwen3Model,
    T5Config,
    T5EncoderModel,
)

from benchmarks.archs import Arch
from omni.models.tiny import build_clip_tokenizer, build_t5_tokenizer
from omni.models.tiny.qwen_image import QWEN_SPECIALS
from omni.models.tiny.qwen_image import _scheduler as qwen_image_scheduler
from omni.models.tiny.qwen_image import build_qwen_tokenizer as qwen_image_tokenizer
from omni.models.tiny.z_image import build_qwen_tokenizer as z_image_tokenizer

SD3_T5_LEN = 256
SD3_CLIP_L_SHARE = 3 / 8  # of the pooled width: 768 of 2048, CLIP-G has the rest
FLUX_VAE = {  # FLUX.1's VAE; SD3.5 and Z-Image ship this architecture too
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}
NARROW_VAE = {
    **FLUX_VAE,
    "block_out_channels": (16,) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
SD3_LATENT_SCALE = {"scaling_factor": 1.5305, "shift_factor": 0.0609}  # SD3.5's
Z_IMAGE_LATENT_SCALE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}  # FLUX.1's VAE
SERVING_DEFAULTS = {
    "sd3": {"width": 1024, "height": 1024, "num_inference_steps": 28},
    "qwen_image": {"width": 1328, "height": 1328, "num_inference_steps": 50},
    # Z-Image-Turbo: distilled for 9 steps without guidance
    "z_image": {"width": 1024, "height": 1024, "num_inference_steps": 9, "guidance_scale": 0.0},
}


def heads_for(width: int) -> tuple[int, int]:
    """(heads, head_dim): the published 64- or 128-wide heads when the width allows, else narrow."""
    for head_dim in (128, 64, 8, 4):
        if width % head_dim == 0 and width >= head_dim:
            return width // head_dim, head_dim
    raise ValueError(f"no head layout for width {width}")


def family_pipeline(arch: Arch, transformer: torch.nn.Module, dtype: torch.dtype) -> Any:
    build = {"sd3": sd3_pipeline, "qwen_image": qwen_image_pipeline, "z_image": z_image_pipeline}
    return build[arch.family](arch, transformer, dtype)


def sd3_pipeline(arch: Arch, transformer: torch.nn.Module, dtype: torch.dtype) -> Any:
    pooled = arch.config["pooled_projection_dim"]
    clip_widths = (int(pooled * SD3_CLIP_L_SHARE), pooled - int(pooled * SD3_CLIP_L_SHARE))
    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer(SD3_T5_LEN)
    clips = [_clip(clip_tokenizer, width) for width in clip_widths]
    vae = {**(FLUX_VAE if arch.is_full_size else NARROW_VAE), **SD3_LATENT_SCALE}
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=AutoencoderKL(**vae).to(dtype),
        text_encoder=clips[0].to(dtype),
        tokenizer=clip_tokenizer,
        text_encoder_2=clips[1].to(dtype),
        tokenizer_2=clip_tokenizer,
        text_encoder_3=_t5(t5_tokenizer, arch.config["joint_attention_dim"]).to(dtype),
        tokenizer_3=t5_tokenizer,
    )


def qwen_image_pipeline(arch: Arch, transformer: torch.nn.Module, dtype: torch.dtype) -> Any:
    tokenizer = qwen_image_tokenizer()
    vae = AutoencoderKLQwenImage() if arch.is_full_size else AutoencoderKLQwenImage(base_dim=16)
    return QwenImagePipeline(
        transformer=transformer,
        scheduler=qwen_image_scheduler(),
        vae=vae.to(dtype),
        text_encoder=_qwen25_vl(tokenizer, arch.config["joint_attention_dim"]).to(dtype),
        tokenizer=tokenizer,
    )


def z_image_pipeline(arch: Arch, transformer: torch.nn.Module, dtype: torch.dtype) -> Any:
    tokenizer = z_image_tokenizer()
    vae = {**(FLUX_VAE if arch.is_full_size else NARROW_VAE), **Z_IMAGE_LATENT_SCALE}
    return ZImagePipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=AutoencoderKL(**vae).to(dtype),
        text_encoder=_qwen3(tokenizer, arch.config["cap_feat_dim"]).to(dtype),
        tokenizer=tokenizer,
    )


def _clip(tokenizer: Any, width: int) -> CLIPTextModelWithProjection:
    """A CLIP text tower of `width` with one narrow layer; its penultimate state is SD3's input."""
    heads, _ = heads_for(width)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=256,
        projection_dim=width,
        num_hidden_layers=2,  # SD3 reads hidden_states[-2]
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModelWithProjection(config).eval()


def _t5(tokenizer: Any, width: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=width,
        d_kv=64,
        d_ff=256,
        num_layers=1,
        num_heads=1,
        feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    return T5EncoderModel(config).eval()


def _qwen25_vl(tokenizer: Any, width: int) -> Qwen2_5_VLForConditionalGeneration:
    """Qwen2.5-VL's text model at `width` (3584 for Qwen-Image) with one narrow layer, and a
    vision tower the text-to-image pipeline never runs."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    heads, head_dim = heads_for(width)
    half = head_dim // 2  # multimodal RoPE sections over half the head, 1:1.5:1.5 as published
    sections = [half // 4, 3 * half // 8, half - half // 4 - 3 * half // 8]
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": width,
        "intermediate_size": 256,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": sections},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision_config = {
        "depth": 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "out_hidden_size": width,
        "fullatt_block_indexes": [0],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def _qwen3(tokenizer: Any, width: int) -> Qwen3Model:
    """Qwen3 at `width` (2560 for Z-Image's Qwen3-4B); two layers, as Z-Image reads the
    second-to-last hidden state."""
    heads, head_dim = heads_for(width)
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=1,
        head_dim=head_dim,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    return Qwen3Model(config).eval()
