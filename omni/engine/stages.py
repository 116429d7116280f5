"""Encoding and decoding: stages beside the denoise loop, so neither stalls a running batch.

`ThreadStages` (omni.engine.stage_threads) runs them on two worker threads, one per stage (on
CUDA each with its own stream): the engine hands them admitted requests to encode and denoised
ones to decode, and goes on stepping; finished work is collected at the next step. An encode
never queues behind a long decode: admissions are what a new request waits for. `InlineStages`
runs them at once on the caller's thread (CFG-parallel, where every rank must encode in
lockstep, and `--no-overlap-stages`).

Each call of a stage is capped (prompts per encode, outputs and pixels per decode). Same-shaped
decodes that queue while the decoder is busy run as one batch, and a decode waits up to
`DECODE_WINDOW_S` for companions while its batch is not full.

Partial images (omni.engine.partials) are decoded by the decode stage too, in calls of their
own: a preview never shares a VAE call with a final output, so asking for previews cannot move
anyone's final pixels, and a preview that fails is dropped without failing its request.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from omni.engine.guard import run_guarded
from omni.engine.observer import EngineObserver
from omni.engine.partials import DecodedPreview, PreviewJob
from omni.models.base import FamilyAdapter
from omni.request import Request

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ENCODE_BATCH = 32  # prompts per encode call
MAX_DECODE_BATCH = 32  # outputs per decode call
MAX_DECODE_PIXELS = 64 * 1024 * 1024  # width x height x frames per decode call (at least one)
DECODE_WINDOW_S = 0.002
NUM_STAGE_RECORDS = 4096


@dataclass(slots=True)
class StageResults:
    """What the stages finished since the last collect, for requests still in the engine."""

    encoded: list[str] = field(default_factory=list)
    decoded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    previews: list[DecodedPreview] = field(default_factory=list)

    @classmethod
    def of_live(cls, done: list[tuple[Request, str, object]]) -> StageResults:
        """The outcomes of requests not finished meanwhile. One aborted while its stage ran is
        left out: its id may already name a new request, which must not take its result."""
        results = cls()
        for request, kind, outcome in done:
            if request.status.is_finished:
                continue
            if kind == "encode":
                results.encoded.append(request.request_id)
            elif kind == "decode":
                results.decoded.append(request.request_id)
            elif kind == "failed":
                results.failed[request.request_id] = outcome
            else:
                results.previews.append(outcome)
        return results


@dataclass(frozen=True, slots=True)
class StageRecord:
    kind: str  # "encode" | "decode" | "preview"
    num_requests: int
    start: float  # time.monotonic()
    end: float


def output_shape(request: Request, latents: torch.Tensor | None = None) -> tuple:
    """What decodes must share to run as one call (`latents`: a preview's, not the request's)."""
    p = request.params
    shape = tuple((request.latents if latents is None else latents).shape)
    return (request.step_keys[-1], p.width, p.height, p.num_frames, shape)


def group_by(items: list[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def output_pixels(request: Request) -> int:
    p = request.params
    return (p.width or 1) * (p.height or 1) * (p.num_frames or 1)


class InlineStages:
    """Encode and decode at once, on the caller's thread."""

    def __init__(self, adapter: FamilyAdapter) -> None:
        self.adapter = adapter
        self.records: collections.deque[StageRecord] = collections.deque(maxlen=NUM_STAGE_RECORDS)
        self._done: list[tuple[Request, str, object]] = []  # (request, kind, outcome)
        self._lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        self.observer = EngineObserver()  # the engine hands over its own

    def encode(self, requests: list[Request]) -> None:
        """Prompt embeddings, initial latents, and each request's schedule and sampler state."""
        self.adapter.prepare(requests)

    def decode(self, requests: list[Request]) -> None:
        outputs = self.adapter.decode(requests)
        for request, result in zip(requests, outputs, strict=True):
            request.output = result
            request.latents = request.cond = request.sampler_state = None
            if request.cache is not None:
                request.cache.forget()  # its tensors; the tally stays for the record

    def submit_encode(self, requests: list[Request]) -> None:
        self._run("encode", self.encode, requests)

    def submit_decode(self, requests: list[Request]) -> None:
        for group in group_by(requests, output_shape):
            self._run("decode", self.decode, group)

    def submit_previews(self, previews: list[PreviewJob]) -> None:
        for group in group_by(previews, lambda p: output_shape(p.request, p.latents)):
            self._run_previews(group)

    def _run_previews(self, previews: list[PreviewJob]) -> None:
        """Decode previews of one shape; those of requests gone meanwhile are skipped."""
        previews = [p for p in previews if not p.request.status.is_finished]
        if not previews:
            return
        start = time.monotonic()
        try:
            with torch.inference_mode():
                outputs = self.adapter.decode([p.stand_in() for p in previews])
        except Exception:
            logger.exception("decoding %d partial image(s) failed: skipped", len(previews))
            return
        end = time.monotonic()
        self.observer.on_stage("preview", end - start, len(previews))
        decoded = [
            (p.request, "preview", DecodedPreview(p.request.request_id, p.steps_done, output))
            for p, output in zip(previews, outputs, strict=True)
        ]
        with self._lock:
            self.records.append(StageRecord("preview", len(previews), start, end))
            self._done.extend(decoded)

    def _run(self, kind: str, stage: Callable, requests: list[Request]) -> None:
        """Run one call of a stage and file its outcome for the next `collect`."""
        start = time.monotonic()
        failed: dict[str, str] = {}
        with torch.inference_mode():
            run_guarded(stage, requests, failed)
        end = time.monotonic()
        self.observer.on_stage(kind, end - start, len(requests))
        with self._lock:
            self.records.append(StageRecord(kind, len(requests), start, end))
            self._done.extend(
                (r, "failed", failed[r.request_id]) if r.request_id in failed else (r, kind, None)
                for r in requests
            )

    def has_results(self) -> bool:
        with self._lock:
            return bool(self._done)

    def collect(self) -> StageResults:
        """On the engine's thread, the one that aborts requests: a request's status cannot
        change while its results are sorted."""
        with self._lock:
            done, self._done = self._done, []
        return StageResults.of_live(done)

    def close(self) -> None:
        """Nothing runs in the background."""
