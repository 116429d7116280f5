"""A short profile of the loaded model's forward at start-up: ms per step against batch size.

The default `max_num_batched_tokens` is the knee of that curve: the smallest batch that reaches
`KNEE_SHARE` of the best throughput measured. Past the knee a bigger batch only stretches every
request's step time; before it, rows are nearly free. Measured against the best point rather
than point to point, one slow sample on a busy machine moves the knee by one point at most;
timed in interleaved rounds after a first pass, a slow spell or a cold first call at a size
rarely moves any point at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from PIL import Image

from omni.engine.stages import InlineStages
from omni.models.base import FamilyAdapter
from omni.request import GenerationParams, Request

logger = logging.getLogger(__name__)

KNEE_SHARE = 0.9
ROUNDS = 5  # timed passes over every size, at most
MIN_ROUNDS = 1  # the first pass stops doubling where fewer would fit


@dataclass(frozen=True, slots=True)
class ForwardProfile:
    width: int
    height: int
    num_frames: int | None
    tokens_per_row: int
    points: tuple[tuple[int, float], ...]  # (rows, ms per forward)
    knee_rows: int | None  # None: too few points measured to find a knee

    @property
    def max_num_batched_tokens(self) -> int | None:
        return None if self.knee_rows is None else self.knee_rows * self.tokens_per_row

    def describe(self) -> str:
        curve = ", ".join(f"{rows}: {ms:.1f} ms" for rows, ms in self.points)
        size = f"{self.width}x{self.height}" + (f"x{self.num_frames}" if self.num_frames else "")
        if self.knee_rows is None:
            return f"forward at {size}: {curve}; too few points for a knee"
        return (
            f"forward at {size} ({self.tokens_per_row} tokens a row): {curve}; knee at "
            f"{self.knee_rows} rows = {self.max_num_batched_tokens} tokens a forward"
        )


def knee(points: list[tuple[int, float]]) -> int | None:
    """The fewest rows whose throughput reaches KNEE_SHARE of the best measured."""
    if len(points) < 3:
        return None
    best = max(rows / ms for rows, ms in points)
    return next(rows for rows, ms in points if rows / ms >= KNEE_SHARE * best)


def profile_forward(
    adapter: FamilyAdapter, max_batch_size: int, time_limit_s: float
) -> ForwardProfile:
    """Time `predict` on 1, 2, 4, ... copies of a default request, within `time_limit_s`."""
    info = adapter.info
    image = (
        Image.new("RGB", (info.default_width, info.default_height)) if info.takes_image else None
    )
    prompt = "a lighthouse on a rocky island"
    params = adapter.resolve(GenerationParams(prompt=prompt, seed=0, image=image))
    step_keys, num_rows = adapter.plan(params)
    tokens = adapter.tokens_per_row(params)
    base = Request("profile", params, step_keys, num_rows, tokens)
    batches: dict[int, list[Request]] = {}

    def forward_seconds(rows: int) -> float:
        if rows not in batches:
            batches[rows] = [replace(base, request_id=f"profile-{i}") for i in range(rows)]
        synchronize(adapter.device)
        start = time.perf_counter()
        adapter.predict(batches[rows])
        synchronize(adapter.device)
        return time.perf_counter() - start

    with torch.inference_mode():
        InlineStages(adapter).encode([base])
        points = measure_curve(forward_seconds, max_batch_size, time_limit_s)
    return ForwardProfile(
        params.width, params.height, params.num_frames, tokens, tuple(points), knee(points)
    )


def measure_curve(
    forward_seconds: Callable[[int], float], max_rows: int, time_limit_s: float
) -> list[tuple[int, float]]:
    """(rows, ms per forward) at 1, 2, 4, ... rows, spending about `time_limit_s` in forwards.

    A first pass runs each size twice, a warm-up (a process's first forwards at a size are
    slow: allocation, kernel selection) and a first timing, and doubles while MIN_ROUNDS rounds
    of every size so far and the next size still fit, judged by the timings. Rounds then time
    every size in turn, alternating direction, up to ROUNDS of them. A slow spell on a shared
    machine lands on a few sizes of one round rather than on all of one size's calls, and each
    size's cost is its fastest call, since other work only ever adds time.
    """
    spent = 0.0
    fastest: dict[int, float] = {}
    rows = 1
    while rows <= max_rows:
        warm_up = forward_seconds(rows)
        seconds = forward_seconds(rows)
        spent += warm_up + seconds
        fastest[rows] = seconds
        # The next size costs about twice this one: twice now, once in every round.
        if spent + 4 * seconds + MIN_ROUNDS * (sum(fastest.values()) + 2 * seconds) > time_limit_s:
            break
        rows *= 2
    sizes = list(fastest)
    for round_ in range(ROUNDS):
        if round_ > 0 and spent + sum(fastest.values()) > time_limit_s:
            break
        for size in sizes if round_ % 2 == 0 else reversed(sizes):
            seconds = forward_seconds(size)
            spent += seconds
            fastest[size] = min(fastest[size], seconds)
    return [(size, fastest[size] * 1000) for size in sizes]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
