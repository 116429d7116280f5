"""A tiny ``StableDiffusion3Pipeline`` (SD3.5 layout) built on disk with random weights.

Like the built-in tiny models it exists so the SD3 adapter runs end to end on a CPU in seconds.
It keeps what makes SD3 SD3: two CLIP text encoders with projections of different widths whose
hidden states are concatenated and zero-padded to the T5 width, a T5 encoder, a 16-channel
``AutoencoderKL`` with a scaling and a shift factor, ``FlowMatchEulerDiscreteScheduler`` with a
static shift of 3, and an ``SD3Transformer2DModel`` with RMS qk-norm (SD3.5). ``dual_attention``
adds SD3.5 Medium's dual-attention layer (MMDiT-X) to the first block.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

from omni.models.tiny.common import _save, _seeded
from omni.models.tiny.text import (
    CLIP_MAX_LENGTH,
    _t5_config_values,
    build_clip_tokenizer,
    build_t5_tokenizer,
)

# StableDiffusion3Pipeline pads T5 prompts to its max_sequence_length default, 256.
SD3_T5_MAX_LENGTH = 256
# Two CLIPs of different widths (CLIP-L and CLIP-G are 768 and 1280) padded to T5's (4096).
CLIP_WIDTHS = (16, 32)
T5_WIDTH = 64
SD3_LATENT_CHANNELS = 16
# Serving defaults (omni.json): a size and step count at which the tiny model answers at once.
TINY_SD3_DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 4}


def _clip_with_projection(
    tokenizer: CLIPTokenizer, width: int, seed: int, component: str
) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=2 * width,
        projection_dim=width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with _seeded(seed, component):
        return CLIPTextModelWithProjection(config).eval()


def _t5(tokenizer: T5Tokenizer, seed: int) -> T5EncoderModel:
    values = {**_t5_config_values(tokenizer), "d_model": T5_WIDTH, "d_kv": T5_WIDTH // 4}
    with _seeded(seed, "text_encoder_3"):
        return T5EncoderModel(T5Config(**values)).eval()


def _vae(seed: int) -> AutoencoderKL:
    with _seeded(seed, "vae"):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=SD3_LATENT_CHANNELS,
            norm_num_groups=4,
            sample_size=64,
            scaling_factor=1.5305,  # SD3.5's
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    return vae.eval()


def _transformer(seed: int, dual_attention: bool) -> SD3Transformer2DModel:
    heads, head_dim = 2, 16
    with _seeded(seed, "transformer"):
        transformer = SD3Transformer2DModel(
            sample_size=8,  # the pipeline's default size: 8 latents * 8 = 64 pixels
            patch_size=2,
            in_channels=SD3_LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=head_dim,
            num_attention_heads=heads,
            joint_attention_dim=T5_WIDTH,
            caption_projection_dim=heads * head_dim,
            pooled_projection_dim=sum(CLIP_WIDTHS),
            out_channels=SD3_LATENT_CHANNELS,
            pos_embed_max_size=16,  # up to 16 * 2 * 8 = 256 pixels a side
            dual_attention_layers=(0,) if dual_attention else (),
            qk_norm="rms_norm",
        )
    return transformer.eval()


def build_tiny_sd3(path: Path, seed: int = 0, *, dual_attention: bool = False) -> Path:
    """Write a complete ``StableDiffusion3Pipeline`` directory to ``path`` and return ``path``."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_clip_tokenizer()
    tokenizer_3 = build_t5_tokenizer(SD3_T5_MAX_LENGTH)
    pipeline = StableDiffusion3Pipeline(
        transformer=_transformer(seed, dual_attention),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=_vae(seed),
        text_encoder=_clip_with_projection(tokenizer, CLIP_WIDTHS[0], seed, "text_encoder"),
        tokenizer=tokenizer,
        text_encoder_2=_clip_with_projection(tokenizer_2, CLIP_WIDTHS[1], seed, "text_encoder_2"),
        tokenizer_2=tokenizer_2,
        text_encoder_3=_t5(tokenizer_3, seed),
        tokenizer_3=tokenizer_3,
    )
    return _save(pipeline, path, TINY_SD3_DEFAULTS)
