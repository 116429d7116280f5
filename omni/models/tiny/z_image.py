"""A tiny Z-Image-Turbo shaped ``ZImagePipeline``: Qwen3 text encoder, FLUX VAE, single-stream DiT.

Random weights, real architectures. The tokenizer is a byte-level BPE learned with the
``tokenizers`` library from omni's vocabulary text, wrapped in ``Qwen2Tokenizer`` (the class the
real model's ``tokenizer/`` loads as) and given a chat template that renders a user message the
way Qwen3's template does, so ``ZImagePipeline._encode_prompt`` runs unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
from tokenizers import Tokenizer, models, trainers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3Model

from omni.models.tiny.common import VOCABULARY_TEXT, _save, _seeded
from omni.models.tiny.flux import _flux_vae

__all__ = ["TINY_Z_IMAGE_DEFAULTS", "build_qwen_tokenizer", "build_tiny_z_image"]

QWEN_PAD = "<|endoftext|>"
# The special tokens Qwen3's chat template writes (the thinking markers only when thinking is
# switched off, which ZImagePipeline never does; they are here so the template is complete).
QWEN_SPECIALS = (QWEN_PAD, "<|im_start|>", "<|im_end|>", "<think>", "</think>")
QWEN_VOCAB_SIZE = 512
TEXT_DIM = 32
TEXT_MAX_POSITIONS = 1024

# Qwen3's template, reduced to what a prompt needs: each message in <|im_start|>role ...
# <|im_end|> lines, then the assistant's turn; an empty thinking block when thinking is off.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n"
    "{% endif %}{% endif %}"
)

# Serving defaults (omni.json): Z-Image-Turbo's distilled setting (no CFG), at a tiny size.
TINY_Z_IMAGE_DEFAULTS = {
    "width": 64,
    "height": 64,
    "num_inference_steps": 4,
    "guidance_scale": 0.0,
}


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """A byte-level BPE in Qwen2's layout: its pre-tokenizer and special tokens, a chat template."""
    layout = Qwen2Tokenizer().backend_tokenizer  # Qwen2's normalizer and pre-tokenizer
    learner = Tokenizer(models.BPE())
    learner.normalizer = layout.normalizer
    learner.pre_tokenizer = layout.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=QWEN_VOCAB_SIZE,
        special_tokens=list(QWEN_SPECIALS),
        initial_alphabet=ByteLevel.alphabet(),
        show_progress=False,
    )
    learner.train_from_iterator([VOCABULARY_TEXT], trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    return Qwen2Tokenizer(
        vocab=learned["vocab"],
        merges=[tuple(pair) for pair in learned["merges"]],
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
        chat_template=CHAT_TEMPLATE,
        model_max_length=TEXT_MAX_POSITIONS,
    )


def _text_encoder(tokenizer: Qwen2Tokenizer, seed: int) -> Qwen3Model:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=TEXT_MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    with _seeded(seed, "text_encoder"):
        return Qwen3Model(config).eval()


def _transformer(seed: int) -> ZImageTransformer2DModel:
    """Two heads of 16 (rotary axes 4+6+6, as Z-Image's 32+48+48 scaled down); positions for
    captions up to the pipeline's 512 tokens and images up to 4096 pixels a side."""
    with _seeded(seed, "transformer"):
        transformer = ZImageTransformer2DModel(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=32,
            n_layers=2,
            n_refiner_layers=1,
            n_heads=2,
            n_kv_heads=2,
            cap_feat_dim=TEXT_DIM,
            axes_dims=[4, 6, 6],
            axes_lens=[1024, 256, 256],
        )
    return transformer.eval()


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Z-Image-Turbo's scheduler config: a static shift of 3."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)


def build_tiny_z_image(path: Path, seed: int = 0) -> Path:
    """Write a complete ``ZImagePipeline`` directory to ``path`` and return ``path``."""
    tokenizer = build_qwen_tokenizer()
    pipeline = ZImagePipeline(
        scheduler=_scheduler(),
        vae=_flux_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=_transformer(seed),
    )
    return _save(pipeline, path, TINY_Z_IMAGE_DEFAULTS)
