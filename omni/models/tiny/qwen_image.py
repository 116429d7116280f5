"""A tiny Qwen-Image shaped ``QwenImagePipeline``, built on disk with random weights.

Components follow Qwen-Image's layout at toy width: a ``QwenImageTransformer2DModel`` (one
block, 2x2 patches over 16 latent channels), an ``AutoencoderKLQwenImage`` (8x spatial
compression), a ``Qwen2_5_VLForConditionalGeneration`` text encoder (with a tiny vision tower
the text-to-image pipeline never runs), a byte-level BPE ``Qwen2Tokenizer`` and the
``FlowMatchEulerDiscreteScheduler`` config Qwen-Image ships.

The tokenizer's merges are learned locally from ``VOCABULARY_TEXT`` plus the pipeline's own
prompt template, so the template's system prefix is exactly the 34 tokens the pipeline drops
(``prompt_template_encode_start_idx``), as with the real Qwen2.5 tokenizer: the embeddings the
transformer sees start at the user's prompt.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from diffusers import (
    AutoencoderKLQwenImage,
    FlowMatchEulerDiscreteScheduler,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
)
from tokenizers import AddedToken, pre_tokenizers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2Tokenizer

from omni.models.tiny.common import VOCABULARY_TEXT, _save, _seeded
from omni.models.tiny.text import learn_byte_level_merges

__all__ = ["TINY_QWEN_IMAGE_DEFAULTS", "build_qwen_tokenizer", "build_tiny_qwen_image"]

TEXT_DIM = 32
QWEN_MERGE_COUNT = 400
ENDOFTEXT = "<|endoftext|>"
# The chat-template and vision special tokens of Qwen2.5-VL, in its id order.
QWEN_SPECIALS = (
    ENDOFTEXT,
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# QwenImagePipeline's prompt template without the prompt: learning merges on it makes each of
# its words one token, as in the real vocabulary.
TEMPLATE_TEXT = (
    "system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:\nuser\nassistant\n"
)

# Serving defaults (omni.json): a size and step count at which the tiny model answers at once.
TINY_QWEN_IMAGE_DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 4}


# Tokenizer ----------------------------------------------------------------------------------


def _pretokenized_words(text: str) -> Counter[str]:
    """Words as Qwen2Tokenizer's own pre-tokenizer (regex split + byte level) cuts them."""
    backend = Qwen2Tokenizer().backend_tokenizer
    normalized = backend.normalizer.normalize_str(text)
    return Counter(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))


def build_qwen_tokenizer(template: str = TEMPLATE_TEXT) -> Qwen2Tokenizer:
    """A byte-level BPE in the Qwen2 layout that knows the chat-template special tokens, its
    merges learned on the vocabulary text and a pipeline's prompt template."""
    counts = _pretokenized_words(VOCABULARY_TEXT + template * 4)
    merges = learn_byte_level_merges(counts, QWEN_MERGE_COUNT)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens += [left + right for left, right in merges]
    tokens += QWEN_SPECIALS
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=32768)
    tokenizer.add_tokens([AddedToken(token, special=True) for token in QWEN_SPECIALS])
    return tokenizer


# Components ---------------------------------------------------------------------------------


def _text_encoder(tokenizer: Qwen2Tokenizer, seed: int) -> Qwen2_5_VLForConditionalGeneration:
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": TEXT_DIM,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        # Qwen2.5-VL's multimodal RoPE, its sections summing to half the head dim (8 / 2).
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids[ENDOFTEXT],
    }
    vision_config = {
        "depth": 1,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "out_hidden_size": TEXT_DIM,
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
    with _seeded(seed, "text_encoder"):
        return Qwen2_5_VLForConditionalGeneration(config).eval()


def _scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Qwen-Image's published scheduler config."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=1.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=0.9,
        base_image_seq_len=256,
        max_image_seq_len=8192,
        shift_terminal=0.02,
        time_shift_type="exponential",
    )


def _vae(seed: int) -> AutoencoderKLQwenImage:
    with _seeded(seed, "vae"):
        vae = AutoencoderKLQwenImage(
            # Narrower decoders give nearly flat images (pixel std ~10 levels) from random weights,
            # too flat for a test to see one prompt's image differ from another's.
            base_dim=16,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
    return vae.eval()


def _transformer(seed: int) -> QwenImageTransformer2DModel:
    with _seeded(seed, "transformer"):
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=64,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=TEXT_DIM,
            axes_dims_rope=(4, 6, 6),
        )
    return transformer.eval()


def build_tiny_qwen_image(path: Path, seed: int = 0) -> Path:
    """Write a complete ``QwenImagePipeline`` directory to ``path`` and return ``path``."""
    tokenizer = build_qwen_tokenizer()
    pipeline = QwenImagePipeline(
        scheduler=_scheduler(),
        vae=_vae(seed),
        text_encoder=_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=_transformer(seed),
    )
    return _save(pipeline, path, TINY_QWEN_IMAGE_DEFAULTS)
