"""A simple synthetic image distribution, with a prompt for each kind of image.

Each prompt names a kind (a rectangle or a soft disc on a shaded background, or a two-colour
gradient) and its colours; every image of a prompt draws its own geometry, shading and a little
colour jitter from a seeded generator. benchmarks/train_tiny.py trains on them.
"""

from __future__ import annotations

import numpy as np

COLOURS = {
    "red": (0.85, 0.15, 0.1),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.9, 0.2),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.15, 0.3, 0.85),
    "purple": (0.55, 0.2, 0.7),
    "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05),
}

# (kind, foreground colour, background colour): the prompts are written from these.
KINDS = (
    ("rectangle", "red", "blue"),
    ("rectangle", "yellow", "black"),
    ("rectangle", "white", "green"),
    ("rectangle", "purple", "orange"),
    ("disc", "orange", "blue"),
    ("disc", "white", "black"),
    ("disc", "green", "yellow"),
    ("disc", "red", "white"),
    ("gradient", "blue", "orange"),
    ("gradient", "black", "white"),
    ("gradient", "purple", "yellow"),
    ("gradient", "green", "red"),
)


def prompt_of(kind: str, foreground: str, background: str) -> str:
    if kind == "gradient":
        return f"a smooth gradient from {foreground} to {background}"
    shape = "rectangle" if kind == "rectangle" else "round blob"
    return f"a {foreground} {shape} on a {background} background"


PROMPTS = tuple(prompt_of(*kind) for kind in KINDS)


def _colour(name: str, rng: np.random.Generator) -> np.ndarray:
    return np.clip(np.asarray(COLOURS[name]) + rng.normal(0.0, 0.05, 3), 0.0, 1.0)


def _ramp(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0..1 along a random direction across the image."""
    angle = rng.uniform(0.0, 2 * np.pi)
    along = np.cos(angle) * x + np.sin(angle) * y
    return (along - along.min()) / (along.max() - along.min())


def render(index: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of prompt `index`: [3, size, size] float32 in [-1, 1] (the VAE's range)."""
    kind, foreground, background = KINDS[index]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    ramp = _ramp(x, y, rng)[..., None]
    front, back = _colour(foreground, rng), _colour(background, rng)
    if kind == "gradient":
        image = (1 - ramp) * front + ramp * back
    else:
        shading = 1.0 + rng.uniform(-0.25, 0.25) * (ramp - 0.5)
        image = np.clip(back * shading, 0.0, 1.0) * np.ones((size, size, 1))
        centre = rng.uniform(0.25, 0.75, 2)
        half = rng.uniform(0.1, 0.3, 2)
        if kind == "rectangle":
            inside = (np.abs(x - centre[0]) < half[0]) & (np.abs(y - centre[1]) < half[1])
            weight = inside.astype(np.float64)
        else:
            distance = np.hypot(x - centre[0], y - centre[1]) / half.mean()
            weight = 1.0 / (1.0 + np.exp((distance - 1.0) * 12.0))  # a soft edge
        image = (1 - weight[..., None]) * image + weight[..., None] * front
    return (image.transpose(2, 0, 1) * 2.0 - 1.0).astype(np.float32)


def dataset(count: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` images, the prompts taken in turn: ([count, 3, size, size], prompt indices)."""
    rng = np.random.default_rng(seed)
    indices = np.arange(count) % len(KINDS)
    images = np.stack([render(int(i), size, rng) for i in indices])
    return images, indices
