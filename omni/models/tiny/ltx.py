"""A tiny LTX-Video shaped ``LTXPipeline``: random weights, real architectures, CPU-fast.

The VAE keeps LTX-Video's compression (patch size 4 and three spatio-temporal downsamplings:
32x spatial, 8x temporal, so frame counts are 8k+1 and sides multiples of 32) with 8 channels
in every block and one layer per block. Its latent statistics are random rather than LTX's
zeros and ones, so a decode that skips de-normalization gives another video. The transformer
has one layer of 4 heads of 8; the scheduler is LTX-Video's own config (dynamic shifting with
its base and max shifts, shift_terminal 0.1). The T5 tokenizer declares 128 tokens, the text
length LTXPipeline encodes to.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKLLTXVideo,
    FlowMatchEulerDiscreteScheduler,
    LTXPipeline,
    LTXVideoTransformer3DModel,
)

from omni.models.tiny.common import TEXT_DIM, _save, _seeded
from omni.models.tiny.text import _t5_encoder, build_t5_tokenizer

LTX_T5_MAX_LENGTH = 128
LTX_LATENT_CHANNELS = 8
TINY_LTX_DEFAULTS = {
    "width": 64,
    "height": 64,
    "num_frames": 9,
    "fps": 8,
    "num_inference_steps": 4,
}


def ltx_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """LTX-Video's published scheduler config (Lightricks/LTX-Video, scheduler_config.json)."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.95,
        max_shift=2.05,
        base_image_seq_len=1024,
        max_image_seq_len=4096,
        shift_terminal=0.1,
    )


def _ltx_vae(seed: int, timestep_conditioning: bool) -> AutoencoderKLLTXVideo:
    with _seeded(seed, "vae"):
        vae = AutoencoderKLLTXVideo(
            latent_channels=LTX_LATENT_CHANNELS,
            block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1),
            decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            timestep_conditioning=timestep_conditioning,
            patch_size=4,
            patch_size_t=1,
            scaling_factor=1.0,
        )
        vae.latents_mean.copy_(torch.randn(LTX_LATENT_CHANNELS) * 0.1)
        vae.latents_std.copy_(torch.rand(LTX_LATENT_CHANNELS) + 0.5)
    return vae.eval()


def _ltx_transformer(seed: int) -> LTXVideoTransformer3DModel:
    with _seeded(seed, "transformer"):
        transformer = LTXVideoTransformer3DModel(
            in_channels=LTX_LATENT_CHANNELS,
            out_channels=LTX_LATENT_CHANNELS,
            patch_size=1,
            patch_size_t=1,
            num_attention_heads=4,
            attention_head_dim=8,
            cross_attention_dim=32,
            num_layers=1,
            caption_channels=TEXT_DIM,
        )
    return transformer.eval()


def build_tiny_ltx(path: Path, seed: int = 0, *, timestep_conditioning: bool = False) -> Path:
    """Write a complete ``LTXPipeline`` directory to ``path`` and return ``path``.

    ``timestep_conditioning`` gives the VAE decoder LTX-Video 0.9.1's timestep input.
    """
    tokenizer = build_t5_tokenizer(LTX_T5_MAX_LENGTH)
    pipeline = LTXPipeline(
        scheduler=ltx_scheduler(),
        vae=_ltx_vae(seed, timestep_conditioning),
        text_encoder=_t5_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=_ltx_transformer(seed),
    )
    return _save(pipeline, path, TINY_LTX_DEFAULTS)
