"""omni-tiny: a FLUX.1-dev shaped FluxPipeline at toy width."""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)

from omni.models.tiny.common import TEXT_DIM, _save, _seeded
from omni.models.tiny.text import (
    FLUX_T5_MAX_LENGTH,
    _clip_text_encoder,
    _t5_encoder,
    build_clip_tokenizer,
    build_t5_tokenizer,
)

# Serving defaults (omni.json): a size at which the model answers in well under a second.
TINY_FLUX_DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 4}


def _flux_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def _flux_vae(seed: int) -> AutoencoderKL:
    with _seeded(seed, "vae"):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=4,
            sample_size=64,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    return vae.eval()


def _flux_transformer(seed: int) -> FluxTransformer2DModel:
    with _seeded(seed, "transformer"):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            pooled_projection_dim=TEXT_DIM,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
    return transformer.eval()


def build_tiny_flux(path: Path, seed: int = 0, kontext: bool = False) -> Path:
    """Write a complete ``FluxPipeline`` directory to ``path`` and return ``path``; with
    `kontext`, the same modules as a ``FluxKontextPipeline`` (FLUX.1 Kontext's layout)."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer(FLUX_T5_MAX_LENGTH)
    pipeline_class = FluxKontextPipeline if kontext else FluxPipeline
    pipeline = pipeline_class(
        scheduler=_flux_scheduler(),
        vae=_flux_vae(seed),
        text_encoder=_clip_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=_flux_transformer(seed),
    )
    return _save(pipeline, path, TINY_FLUX_DEFAULTS)
