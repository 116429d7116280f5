"""Tiny, deterministic diffusion pipelines built on disk from real diffusers architectures.

Every weight here is random, so these pipelines produce noise-like images and videos. They
exist only so the whole serving stack (loading, scheduling, batching, decoding, encoding of
outputs) runs anywhere, on CPU, in seconds, without downloading a checkpoint.

Built-in models:

* ``omni-tiny``: a FLUX.1-dev shaped ``FluxPipeline`` (CLIP + T5 text encoders, a 16-channel
  ``AutoencoderKL`` with 8x spatial compression, a one-double/one-single block transformer).
* ``omni-tiny-video``: a Wan2.1 shaped ``WanPipeline`` (UMT5 text encoder, ``AutoencoderKLWan``
  with 4x temporal and 8x spatial compression, ``UniPCMultistepScheduler`` with flow sigmas).
  Its VAE is the narrowest whose decoder keeps two channels in every layer (with one, the RMS
  norms reduce each value to its sign), its transformer has one head and one layer, and its RoPE
  table is as long as Wan's, so it makes even the Videos API's own examples (81 frames at
  1280x720) on a CPU in minutes; its serving defaults skip guidance (``guidance_scale=1``).

The FLUX T5 tokenizer declares ``model_max_length=64`` to keep the text sequence short; an
engine should pass ``max_sequence_length=min(512, pipe.tokenizer_2.model_max_length)``.

The text tokenizers are built locally with the ``tokenizers`` library from a short English
text written for this module: a byte-level BPE in the CLIP layout and a Unigram model in the
T5 layout. Writes go through ``ensure_builtin`` into a temporary directory that is renamed
into place only after a completion marker has been written, so concurrent builders and
crashes never leave a half-written model behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from itertools import pairwise
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
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

from omni.models.base import SERVING_DEFAULTS_FILE

__all__ = [
    "BUILTIN_MODELS",
    "COMPLETE_MARKER",
    "build_tiny_flux",
    "build_tiny_wan",
    "ensure_builtin",
]

COMPLETE_MARKER = ".omni-complete"
BUILD_FORMAT = "omni-tiny-build-v3"
CACHE_ENV_VAR = "OMNI_CACHE_DIR"
LEFTOVER_AGE_S = 3600.0

TEXT_DIM = 32
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

WAN_T2V_BOUNDARY_RATIO = 0.875
WAN_I2V_BOUNDARY_RATIO = 0.9
WAN_LATENT_CHANNELS = 16
WAN_I2V_IN_CHANNELS = 36

VOCABULARY_TEXT = """
A small orange cat sleeps on a warm wooden table near the open window. Outside, a red car
drives slowly down a quiet street while the morning light turns the old houses gold. A dog
with a blue collar runs across the green park and jumps over a puddle of rain water. Two
children paint a picture of mountains, rivers, forests and a bright yellow sun in the sky.
The photograph shows a city at night, with tall glass towers, neon signs and people walking
under umbrellas. A portrait of a woman in a black coat, soft studio lighting, sharp focus,
high detail. A landscape with snow on the hills, a frozen lake, pine trees and a cloudy
winter sky at sunset. An astronaut rides a white horse on the moon, digital art, cinematic
lighting. A bowl of fresh fruit: apples, oranges, grapes and a banana on a kitchen counter.
The boat sails across the calm sea toward a lighthouse on the rocky island. A close up
photo of a flower with drops of water on its purple petals. A cat and a dog play together
in the garden, 4k, realistic, beautiful colors, wide angle, slow motion video of waves.
"""


_GLOBAL_RNG_LOCK = threading.Lock()


@contextmanager
def _seeded(seed: int, component: str) -> Iterator[None]:
    """Seed torch's global CPU RNG for one component, then restore the caller's state.

    Module constructors draw from the process-wide generator, so builders in other threads
    are serialized here to keep every build byte-identical.
    """
    with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + zlib.crc32(component.encode()))
        yield


# Tokenizers ---------------------------------------------------------------------------------


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
    """Greedy BPE with lexicographic tie-breaking, so the result never depends on hashing."""
    splits = {word: [*word[:-1], word[-1] + END_OF_WORD] for word in sorted(counts)}
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


# FLUX ---------------------------------------------------------------------------------------


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


def build_tiny_flux(path: Path, seed: int = 0) -> Path:
    """Write a complete ``FluxPipeline`` directory to ``path`` and return ``path``."""
    tokenizer = build_clip_tokenizer()
    tokenizer_2 = build_t5_tokenizer(FLUX_T5_MAX_LENGTH)
    pipeline = FluxPipeline(
        scheduler=_flux_scheduler(),
        vae=_flux_vae(seed),
        text_encoder=_clip_text_encoder(tokenizer, seed),
        tokenizer=tokenizer,
        text_encoder_2=_t5_encoder(tokenizer_2, seed),
        tokenizer_2=tokenizer_2,
        transformer=_flux_transformer(seed),
    )
    return _save(pipeline, path, TINY_FLUX_DEFAULTS)


# Wan ----------------------------------------------------------------------------------------


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


def _wan_transformer(seed: int, component: str, in_channels: int) -> WanTransformer3DModel:
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
            num_layers=1,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        )
    return transformer.eval()


def _wan_experts(
    seed: int, in_channels: int, two_experts: bool
) -> tuple[WanTransformer3DModel, WanTransformer3DModel | None]:
    high_noise = _wan_transformer(seed, "transformer", in_channels)
    if not two_experts:
        return high_noise, None
    return high_noise, _wan_transformer(seed, "transformer_2", in_channels)


def build_tiny_wan(
    path: Path,
    seed: int = 0,
    *,
    image_to_video: bool = False,
    two_experts: bool = False,
) -> Path:
    """Write a ``WanPipeline`` (or ``WanImageToVideoPipeline``) directory and return ``path``.

    Image-to-video follows the Wan2.2 A14B layout: no CLIP image encoder (``image_dim=None``),
    and the transformer reads 36 channels (16 noise + 4 frame mask + 16 encoded condition).
    ``two_experts`` adds ``transformer_2`` and a ``boundary_ratio`` (0.875 for text-to-video,
    0.9 for image-to-video, as Wan2.2 A14B ships), stored as a pipeline config key in
    ``model_index.json``.
    """
    in_channels = WAN_I2V_IN_CHANNELS if image_to_video else WAN_LATENT_CHANNELS
    transformer, transformer_2 = _wan_experts(seed, in_channels, two_experts)
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


# Cache --------------------------------------------------------------------------------------


# Serving defaults (omni.json): sizes at which the tiny models answer in well under a second.
TINY_FLUX_DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 4}
TINY_WAN_DEFAULTS = {
    "width": 32,
    "height": 32,
    "num_frames": 9,
    "fps": 8,
    "num_inference_steps": 4,
    "guidance_scale": 1.0,
}


def _save(
    pipeline: FluxPipeline | WanPipeline | WanImageToVideoPipeline,
    path: Path,
    serving_defaults: dict[str, int],
) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path, safe_serialization=True)
    (path / SERVING_DEFAULTS_FILE).write_text(json.dumps(serving_defaults, indent=2) + "\n")
    return path


BUILTIN_MODELS: dict[str, Callable[[Path], Path]] = {
    "omni-tiny": build_tiny_flux,
    "omni-tiny-video": build_tiny_wan,
}


def default_cache_root() -> Path:
    """``$OMNI_CACHE_DIR`` when set, else ``~/.cache/omni/models``."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "omni" / "models"


def is_complete(directory: Path) -> bool:
    marker = directory / COMPLETE_MARKER
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == BUILD_FORMAT


def _discard(directory: Path) -> None:
    """Move ``directory`` out of the way atomically, then delete it."""
    graveyard = Path(tempfile.mkdtemp(prefix=f".{directory.name}.stale-", dir=directory.parent))
    with suppress(FileNotFoundError):
        os.replace(directory, graveyard / directory.name)
    shutil.rmtree(graveyard, ignore_errors=True)


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; a complete ``target`` from a racing builder wins."""
    for _ in range(3):
        try:
            os.replace(staging, target)
            return
        except OSError:
            if is_complete(target):
                return
            _discard(target)
    os.replace(staging, target)


def _sweep_leftovers(root: Path, name: str) -> None:
    """Delete staging directories that builders killed mid-build left behind.

    A live builder's directory is younger than ``LEFTOVER_AGE_S`` (a build takes seconds), so
    only ones older than that are removed.
    """
    cutoff = time.time() - LEFTOVER_AGE_S
    for pattern in (f".{name}.building-*", f".{name}.stale-*"):
        for leftover in root.glob(pattern):
            with suppress(FileNotFoundError):
                if leftover.stat().st_mtime < cutoff:
                    shutil.rmtree(leftover, ignore_errors=True)


def ensure_builtin(name: str, cache_dir: Path | None = None) -> Path:
    """Return ``<cache root>/<name>`` for a built-in model, building it on first use."""
    if name not in BUILTIN_MODELS:
        known = ", ".join(sorted(BUILTIN_MODELS))
        raise KeyError(f"unknown built-in model {name!r}; known: {known}")
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    target = root / name
    if root.is_dir():
        _sweep_leftovers(root, name)
    if is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.building-", dir=root))
    staging.chmod(0o755)
    try:
        BUILTIN_MODELS[name](staging)
        (staging / COMPLETE_MARKER).write_text(BUILD_FORMAT + "\n", encoding="utf-8")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
