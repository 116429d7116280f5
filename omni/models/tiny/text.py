"""Tokenizers learned locally with the ``tokenizers`` library, and tiny text encoders.

A byte-level BPE in the CLIP layout, a Unigram model in the T5 layout and the greedy
byte-level merges the Qwen-style tokenizers use, all learned from ``VOCABULARY_TEXT``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from itertools import pairwise

from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

from omni.models.tiny.common import TEXT_DIM, VOCABULARY_TEXT, _seeded

CLIP_MAX_LENGTH = 77
FLUX_T5_MAX_LENGTH = 64
WAN_T5_MAX_LENGTH = 512
CLIP_MERGE_COUNT = 200
END_OF_WORD = "</w>"
CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
METASPACE = "\u2581"
PRINTABLE = "".join(chr(code) for code in range(33, 127))


def _clip_pretokenized_words(text: str) -> Counter[str]:
    backend = CLIPTokenizer().backend_tokenizer
    normalized = backend.normalizer.normalize_str(text)
    return Counter(word for word, _ in backend.pre_tokenizer.pre_tokenize_str(normalized))


def _merge_symbols(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if index + 1 < len(symbols) and (symbols[index], symbols[index + 1]) == pair:
            merged.append(symbols[index] + symbols[index + 1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return merged


def _most_frequent_pair(
    splits: dict[str, list[str]], counts: Counter[str]
) -> tuple[str, str] | None:
    pairs: Counter[tuple[str, str]] = Counter()
    for word, symbols in splits.items():
        for pair in pairwise(symbols):
            pairs[pair] += counts[word]
    if not pairs:
        return None
    return min(pairs, key=lambda pair: (-pairs[pair], pair))


def _learn_bpe_merges(counts: Counter[str], merge_count: int) -> list[tuple[str, str]]:
    """CLIP's BPE: the last symbol of a word carries the end-of-word marker."""
    splits = {word: [*word[:-1], word[-1] + END_OF_WORD] for word in sorted(counts)}
    return _greedy_merges(splits, counts, merge_count)


def learn_byte_level_merges(counts: Counter[str], merge_count: int) -> list[tuple[str, str]]:
    """GPT-2 / Qwen style BPE over byte-level words, without an end-of-word marker."""
    return _greedy_merges({word: list(word) for word in sorted(counts)}, counts, merge_count)


def _greedy_merges(
    splits: dict[str, list[str]], counts: Counter[str], merge_count: int
) -> list[tuple[str, str]]:
    """Greedy BPE with lexicographic tie-breaking, so the result never depends on hashing."""
    merges: list[tuple[str, str]] = []
    for _ in range(merge_count):
        pair = _most_frequent_pair(splits, counts)
        if pair is None:
            break
        merges.append(pair)
        splits = {word: _merge_symbols(symbols, pair) for word, symbols in splits.items()}
    return merges


def _clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, *(char + END_OF_WORD for char in alphabet)]
    tokens += [left + right for left, right in merges]
    tokens += [CLIP_BOS, CLIP_EOS]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def build_clip_tokenizer() -> CLIPTokenizer:
    merges = _learn_bpe_merges(_clip_pretokenized_words(VOCABULARY_TEXT), CLIP_MERGE_COUNT)
    return CLIPTokenizer(
        vocab=_clip_vocab(merges),
        merges=merges,
        model_max_length=CLIP_MAX_LENGTH,
    )


def _unigram_pieces(text: str) -> list[tuple[str, float]]:
    words = Counter(METASPACE + word for word in re.findall(r"[a-z]+", text.lower()))
    total = sum(words.values()) + len(PRINTABLE) + 1
    floor = math.log(1 / total) - 2.0
    scored = {piece: math.log(count / total) for piece, count in words.items()}
    scored.update({char: floor for char in PRINTABLE})
    scored[METASPACE] = floor + 1.0
    return sorted(scored.items(), key=lambda item: (-item[1], item[0]))


def build_t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    specials = [(token, 0.0) for token in T5_SPECIALS]
    return T5Tokenizer(
        vocab=[*specials, *_unigram_pieces(VOCABULARY_TEXT)],
        extra_ids=0,
        model_max_length=model_max_length,
    )


# Text encoders ------------------------------------------------------------------------------


def _clip_text_encoder(tokenizer: CLIPTokenizer, seed: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        projection_dim=TEXT_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with _seeded(seed, "text_encoder"):
        return CLIPTextModel(config).eval()


def _t5_config_values(tokenizer: T5Tokenizer) -> dict[str, int | str]:
    return {
        "vocab_size": len(tokenizer),
        "d_model": TEXT_DIM,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
        "relative_attention_num_buckets": 8,
        "relative_attention_max_distance": 32,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }


def _t5_encoder(tokenizer: T5Tokenizer, seed: int) -> T5EncoderModel:
    with _seeded(seed, "text_encoder_2"):
        return T5EncoderModel(T5Config(**_t5_config_values(tokenizer))).eval()


def _umt5_encoder(tokenizer: T5Tokenizer, seed: int) -> UMT5EncoderModel:
    with _seeded(seed, "text_encoder"):
        return UMT5EncoderModel(UMT5Config(**_t5_config_values(tokenizer))).eval()
