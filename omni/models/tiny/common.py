"""What every tiny builder shares: seeded construction, the vocabulary text, saving."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from omni.models.base import SERVING_DEFAULTS_FILE

TEXT_DIM = 32

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


def _save(pipeline: Any, path: Path, serving_defaults: dict[str, Any]) -> Path:
    """Write a pipeline with save_pretrained and its serving defaults as omni.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(path, safe_serialization=True)
    (path / SERVING_DEFAULTS_FILE).write_text(json.dumps(serving_defaults, indent=2) + "\n")
    return path
