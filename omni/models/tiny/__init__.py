"""Tiny, deterministic diffusion pipelines built on disk from real diffusers architectures.

Every weight here is random, so these pipelines produce noise-like images and videos. They
exist only so the whole serving stack (loading, scheduling, batching, decoding, encoding of
outputs) runs anywhere, on CPU, in seconds, without downloading a checkpoint.

Built-in models:

* ``omni-tiny``: a FLUX.1-dev shaped ``FluxPipeline`` (CLIP + T5 text encoders, a 16-channel
  ``AutoencoderKL`` with 8x spatial compression, a one-double/one-single block transformer).
* ``omni-tiny-kontext``: the same modules as a ``FluxKontextPipeline`` (FLUX.1 Kontext), whose
  edits read the input image as reference tokens.
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

import functools
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from omni.models.tiny.flux import build_tiny_flux
from omni.models.tiny.text import build_clip_tokenizer, build_t5_tokenizer
from omni.models.tiny.wan import build_tiny_wan

__all__ = [
    "BUILTIN_MODELS",
    "COMPLETE_MARKER",
    "build_clip_tokenizer",
    "build_t5_tokenizer",
    "build_tiny_flux",
    "build_tiny_wan",
    "ensure_builtin",
]

COMPLETE_MARKER = ".omni-complete"
BUILD_FORMAT = "omni-tiny-build-v4"
CACHE_ENV_VAR = "OMNI_CACHE_DIR"
LEFTOVER_AGE_S = 3600.0

BUILTIN_MODELS: dict[str, Callable[[Path], Path]] = {
    "omni-tiny": build_tiny_flux,
    "omni-tiny-kontext": functools.partial(build_tiny_flux, kontext=True),
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
