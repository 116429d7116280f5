"""A tiny FLUX.2 [klein] pipeline (``Flux2KleinPipeline``) built on disk with random weights.

Shaped like FLUX.2-klein-base: a Qwen3 causal LM as text encoder (the pipeline stacks its hidden
states after layers 9, 18 and 27, so the tiny encoder keeps 27 layers, each 32 wide), a byte-level
BPE tokenizer in the Qwen2 layout with the chat-template special tokens, an ``AutoencoderKLFlux2``
whose batch-norm latent statistics are random (so (un)normalising is exercised), a one-double /
one-single block ``Flux2Transformer2DModel`` without guidance embeddings, and the FLUX.2 Euler
scheduler with dynamic shifting. ``is_distilled`` is False unless asked for, so the pipeline runs
real CFG against the empty prompt whenever ``guidance_scale > 1``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
)
from tokenizers import pre_tokenizers
from transformers import Qwen2TokenizerFast, Qwen3Config, Qwen3ForCausalLM

from omni.models.tiny.common import VOCABULARY_TEXT, _save, _seeded
from omni.models.tiny.text import learn_byte_level_merges

QWEN_HIDDEN = 32
QWEN_LAYERS = 27  # hidden_states[27] is the deepest layer the pipeline reads
QWEN_MAX_LENGTH = 64  # the adapter and the tests read min(512, model_max_length) text tokens
QWEN_MERGE_COUNT = 200
LATENT_CHANNELS = 4
END_OF_TEXT = "<|endoftext|>"
CHAT_SPECIALS = ("<|im_start|>", "<|im_end|>", "<think>", "</think>")

# The Qwen3 chat layout for the single user turn the pipeline renders, with thinking switched
# off the way Qwen3 does it (an empty think block after the assistant header).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)

TINY_FLUX2_DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 4}


def _byte_level_merges(text: str, merge_count: int) -> list[tuple[str, str]]:
    """Merges over the byte-level words of `text`."""
    splitter = pre_tokenizers.ByteLevel(add_prefix_space=False)
    counts = Counter(word for word, _ in splitter.pre_tokenize_str(text))
    return learn_byte_level_merges(counts, merge_count)


def build_qwen_tokenizer() -> Qwen2TokenizerFast:
    """A Qwen2-layout byte-level BPE with <|endoftext|> as pad and the chat special tokens."""
    merges = _byte_level_merges(VOCABULARY_TEXT, QWEN_MERGE_COUNT)
    tokens = [*sorted(pre_tokenizers.ByteLevel.alphabet()), *(a + b for a, b in merges)]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
        model_max_length=QWEN_MAX_LENGTH,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT_SPECIALS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _qwen3_encoder(tokenizer: Qwen2TokenizerFast, seed: int) -> Qwen3ForCausalLM:
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=QWEN_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=QWEN_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with _seeded(seed, "text_encoder"):
        return Qwen3ForCausalLM(config).eval()


def _flux2_vae(seed: int) -> AutoencoderKLFlux2:
    with _seeded(seed, "vae"):
        vae = AutoencoderKLFlux2(
            block_out_channels=(8, 16, 16, 16),
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=4,
            sample_size=64,
        )
        # Trained statistics, not the identity a fresh BatchNorm starts with.
        vae.bn.running_mean.normal_(0.0, 0.5)
        vae.bn.running_var.uniform_(0.5, 2.0)
    return vae.eval()


def _flux2_transformer(seed: int) -> Flux2Transformer2DModel:
    with _seeded(seed, "transformer"):
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=LATENT_CHANNELS * 4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=3 * QWEN_HIDDEN,
            axes_dims_rope=(4, 4, 4, 4),
            guidance_embeds=False,
        )
    return transformer.eval()


def _flux2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX.2's shipped scheduler config: the pipeline hands it sigmas and its empirical mu."""
    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )


def build_tiny_flux2_klein(path: Path, seed: int = 0, *, is_distilled: bool = False) -> Path:
    """Write a complete ``Flux2KleinPipeline`` directory to ``path`` and return ``path``."""
    tokenizer = build_qwen_tokenizer()
    pipeline = Flux2KleinPipeline(
        scheduler=_flux2_scheduler(),
        vae=_flux2_vae(seed),
        text_encoder=_qwen3_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        transformer=_flux2_transformer(seed),
        is_distilled=is_distilled,
    )
    return _save(pipeline, path, TINY_FLUX2_DEFAULTS)
