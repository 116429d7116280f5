"""omni-tiny-video: a Wan2.1 shaped WanPipeline (and Wan2.2 two-expert and image-to-video
variants) at toy width."""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)

from omni.models.tiny.common import TEXT_DIM, _save, _seeded
from omni.models.tiny.rife import TINY_RIFE
from omni.models.tiny.text import WAN_T5_MAX_LENGTH, _umt5_encoder, build_t5_tokenizer

WAN_T2V_BOUNDARY_RATIO = 0.875
WAN_I2V_BOUNDARY_RATIO = 0.9
WAN_LATENT_CHANNELS = 16
WAN_I2V_IN_CHANNELS = 36

# Serving defaults (omni.json): sizes at which the model answers in well under a second.
TINY_WAN_DEFAULTS = {
    "width": 32,
    "height": 32,
    "num_frames": 9,
    "fps": 8,
    "num_inference_steps": 4,
    "guidance_scale": 1.0,
    "frame_interpolation_model": TINY_RIFE,
}


def _wan_scheduler() -> UniPCMultistepScheduler:
    return UniPCMultistepScheduler(
        num_train_timesteps=1000,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        solver_order=2,
        solver_type="bh2",
        final_sigmas_type="zero",
    )


def _wan_vae(seed: int) -> AutoencoderKLWan:
    with _seeded(seed, "vae"):
        vae = AutoencoderKLWan(
            base_dim=4,
            z_dim=WAN_LATENT_CHANNELS,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=0,
            temperal_downsample=[False, True, True],
        )
    return vae.eval()


def _wan_transformer(
    seed: int, component: str, in_channels: int, num_layers: int = 1
) -> WanTransformer3DModel:
    with _seeded(seed, component):
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=1,
            attention_head_dim=6,
            in_channels=in_channels,
            out_channels=WAN_LATENT_CHANNELS,
            text_dim=TEXT_DIM,
            freq_dim=256,
            ffn_dim=32,
            num_layers=num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        )
    return transformer.eval()


def _wan_experts(
    seed: int, in_channels: int, two_experts: bool, num_layers: int
) -> tuple[WanTransformer3DModel, WanTransformer3DModel | None]:
    high_noise = _wan_transformer(seed, "transformer", in_channels, num_layers)
    if not two_experts:
        return high_noise, None
    return high_noise, _wan_transformer(seed, "transformer_2", in_channels, num_layers)


def build_tiny_wan(
    path: Path,
    seed: int = 0,
    *,
    image_to_video: bool = False,
    two_experts: bool = False,
    num_layers: int = 1,
) -> Path:
    """Write a ``WanPipeline`` (or ``WanImageToVideoPipeline``) directory and return ``path``.

    Image-to-video follows the Wan2.2 A14B layout: no CLIP image encoder (``image_dim=None``),
    and the transformer reads 36 channels (16 noise + 4 frame mask + 16 encoded condition).
    ``two_experts`` adds ``transformer_2`` and a ``boundary_ratio`` (0.875 for text-to-video,
    0.9 for image-to-video, as Wan2.2 A14B ships), stored as a pipeline config key in
    ``model_index.json``. ``num_layers`` above 1 gives First-Block Cache blocks to skip.
    """
    in_channels = WAN_I2V_IN_CHANNELS if image_to_video else WAN_LATENT_CHANNELS
    transformer, transformer_2 = _wan_experts(seed, in_channels, two_experts, num_layers)
    tokenizer = build_t5_tokenizer(WAN_T5_MAX_LENGTH)
    boundary = WAN_I2V_BOUNDARY_RATIO if image_to_video else WAN_T2V_BOUNDARY_RATIO
    pipeline_class = WanImageToVideoPipeline if image_to_video else WanPipeline
    pipeline = pipeline_class(
        tokenizer=tokenizer,
        text_encoder=_umt5_encoder(tokenizer, seed),
        vae=_wan_vae(seed),
        scheduler=_wan_scheduler(),
        transformer=transformer,
        transformer_2=transformer_2,
        boundary_ratio=boundary if two_experts else None,
    )
    return _save(pipeline, path, TINY_WAN_DEFAULTS)
