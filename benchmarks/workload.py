"""Workload mixes: request classes with weights, read from small JSON files, scaled and sampled.

A workload file looks like::

    {"name": "mixed-resolution",
     "classes": [{"name": "512px", "weight": 15, "width": 512, "height": 512,
                  "num_inference_steps": 20}, ...]}

Class fields: ``name``, ``weight``, ``kind`` ("image" or "video"), ``width``, ``height``,
``num_inference_steps`` and optionally ``guidance_scale``, ``true_cfg_scale``,
``negative_prompt`` (real CFG needs both of the last two), ``n``, ``num_frames``, ``fps``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Literal

WORKLOAD_DIR = Path(__file__).parent / "workloads"
PROMPTS = (
    "a small orange cat sleeping on a warm wooden table near an open window",
    "a red car driving down a quiet street in the golden morning light",
    "a portrait of a woman in a black coat, soft studio lighting, sharp focus",
    "a landscape with snow on the hills, a frozen lake and pine trees at sunset",
    "an astronaut riding a white horse on the moon, digital art, cinematic lighting",
    "a bowl of fresh fruit on a kitchen counter, apples, oranges and grapes",
    "a boat sailing across a calm sea toward a lighthouse on a rocky island",
    "a city at night with tall glass towers, neon signs and people under umbrellas",
)


@dataclass(frozen=True, slots=True)
class RequestClass:
    name: str
    weight: float
    width: int
    height: int
    num_inference_steps: int
    kind: Literal["image", "video"] = "image"
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    n: int = 1
    num_frames: int | None = None
    fps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("image", "video"):
            raise ValueError(f"class {self.name}: kind must be image or video, got {self.kind}")
        if self.weight <= 0:
            raise ValueError(f"class {self.name}: weight must be positive")
        if min(self.width, self.height, self.num_inference_steps, self.n) < 1:
            raise ValueError(f"class {self.name}: sizes, steps and n must be at least 1")

    @property
    def uses_cfg(self) -> bool:
        return self.negative_prompt is not None and (self.true_cfg_scale or 1.0) > 1.0

    @property
    def label(self) -> str:
        cfg = " cfg" if self.uses_cfg else ""
        frames = f"x{self.num_frames}f" if self.kind == "video" and self.num_frames else ""
        size = f"{self.width}x{self.height}{frames}"
        return f"{self.name} ({size}, {self.num_inference_steps} steps{cfg})"


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    classes: tuple[RequestClass, ...]
    description: str = ""
    unique_prompts: bool = False  # every request's prompt differs: no text-embedding cache hits

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError(f"workload {self.name} has no classes")
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"workload {self.name} has duplicate class names")

    @property
    def has_video(self) -> bool:
        return any(c.kind == "video" for c in self.classes)

    def scaled(self, size_scale: float, step_scale: float, size_multiple: int = 16) -> Workload:
        """Shrink sizes and step counts (for tiny models), keeping the mix and class names."""
        if size_scale <= 0 or step_scale <= 0:
            raise ValueError("scales must be positive")
        if size_scale == 1 and step_scale == 1:
            return self
        classes = tuple(
            replace(
                c,
                width=scale_side(c.width, size_scale, size_multiple),
                height=scale_side(c.height, size_scale, size_multiple),
                num_inference_steps=max(1, round(c.num_inference_steps * step_scale)),
            )
            for c in self.classes
        )
        return replace(self, classes=classes)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: its class and the exact fields it carries."""

    request_class: RequestClass
    prompt: str
    seed: int


def scale_side(side: int, scale: float, multiple: int) -> int:
    return max(multiple, round(side * scale / multiple) * multiple)


def parse_workload(data: dict) -> Workload:
    known = {f.name for f in fields(RequestClass)}
    classes = []
    for entry in data.get("classes", []):
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"unknown class fields: {', '.join(sorted(unknown))}")
        classes.append(RequestClass(**entry))
    return Workload(
        name=data["name"], classes=tuple(classes), description=data.get("description", "")
    )


def load_workload(name_or_path: str) -> Workload:
    """A path to a JSON file, or the name of one shipped in benchmarks/workloads/."""
    path = Path(name_or_path)
    if not path.is_file():
        path = WORKLOAD_DIR / f"{name_or_path.replace('-', '_')}.json"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in WORKLOAD_DIR.glob("*.json")))
        raise FileNotFoundError(f"no workload {name_or_path!r}; shipped: {shipped}")
    return parse_workload(json.loads(path.read_text()))


def class_counts(workload: Workload, count: int) -> dict[str, int]:
    """Split `count` requests over the classes by weight (largest remainder), exactly."""
    total = sum(c.weight for c in workload.classes)
    quotas = {c.name: count * c.weight / total for c in workload.classes}
    counts = {name: int(quota) for name, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda name: counts[name] - quotas[name])
    for name in by_remainder[: count - sum(counts.values())]:
        counts[name] += 1
    return counts


def sample_requests(workload: Workload, count: int, seed: int) -> list[RequestSpec]:
    """`count` requests in the workload's proportions, in a seeded random order."""
    rng = random.Random(seed)
    by_name = {c.name: c for c in workload.classes}
    classes = [by_name[name] for name, n in class_counts(workload, count).items() for _ in range(n)]
    rng.shuffle(classes)
    specs = [RequestSpec(c, rng.choice(PROMPTS), rng.randrange(2**31)) for c in classes]
    if workload.unique_prompts:
        specs = [replace(s, prompt=f"{s.prompt}, take {s.seed}") for s in specs]
    return specs


def standalone_requests(workload: Workload, seed: int) -> list[RequestSpec]:
    """One request per class, for measuring each class's latency alone."""
    rng = random.Random(seed)
    return [RequestSpec(c, PROMPTS[0], rng.randrange(2**31)) for c in workload.classes]
