"""Encoding and decoding: stages beside the denoise loop, so neither stalls a running batch.

`ThreadStages` runs them on two worker threads, one per stage (on CUDA each with its own
stream): the engine hands them admitted requests to encode and denoised ones to decode, and goes
on stepping; finished work is collected at the next step. An encode never queues behind a long
decode: admissions are what a new request waits for. `InlineStages` runs them at once on the
caller's thread (CFG-parallel, where every rank must encode in lockstep, and
`--no-overlap-stages`).

Each call of a stage is capped (prompts per encode, outputs and pixels per decode). Same-shaped
decodes that queue while the decoder is busy run as one batch, and a decode waits up to
`DECODE_WINDOW_S` for companions while its batch is not full.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass

import torch

from omni.engine.observer import EngineObserver
from omni.models.base import FamilyAdapter
from omni.request import Request

logger = logging.getLogger(__name__)

MAX_ENCODE_BATCH = 32  # prompts per encode call
MAX_DECODE_BATCH = 32  # outputs per decode call
MAX_DECODE_PIXELS = 64 * 1024 * 1024  # width x height x frames per decode call (at least one)
DECODE_WINDOW_S = 0.002
NUM_STAGE_RECORDS = 4096


@dataclass(slots=True)
class StageResults:
    encoded: list[str] = field(default_factory=list)
    decoded: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StageRecord:
    kind: str  # "encode" | "decode"
    num_requests: int
    start: float  # time.monotonic()
    end: float


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_guarded(
    stage: Callable[[list[Request]], None], requests: list[Request], failed: dict[str, str]
) -> None:
    """Run a stage; a fault fails only these requests, and out-of-memory halves and retries."""
    if not requests:
        return
    try:
        stage(requests)
    except Exception as exc:
        if is_out_of_memory(exc) and drop_step_caches(requests):
            logger.warning(
                "out of memory on %d requests: dropping their step caches", len(requests)
            )
            empty_device_cache()
            run_guarded(stage, requests, failed)
            return
        if is_out_of_memory(exc) and len(requests) > 1:
            logger.warning("out of memory on %d requests: splitting", len(requests))
            empty_device_cache()
            half = len(requests) // 2
            run_guarded(stage, requests[:half], failed)
            run_guarded(stage, requests[half:], failed)
            return
        logger.exception("%s failed for %d request(s)", stage.__name__, len(requests))
        message = f"{type(exc).__name__}: {exc}"
        for request in requests:
            failed[request.request_id] = message


def drop_step_caches(requests: list[Request]) -> bool:
    """Forget the requests' step caches (they start again cold); whether any memory was held.

    Also what keeps a retried step correct: an interrupted step may have refreshed some caches.
    """
    held = any(r.cache is not None and r.cache.nbytes for r in requests)
    for request in requests:
        if request.cache is not None:
            request.cache.forget()
    return held


def output_shape(request: Request) -> tuple:
    p = request.params
    return (request.step_keys[-1], p.width, p.height, p.num_frames, tuple(request.latents.shape))


def group_by_shape(requests: list[Request]) -> list[list[Request]]:
    groups: dict[object, list[Request]] = {}
    for request in requests:
        groups.setdefault(output_shape(request), []).append(request)
    return list(groups.values())


def output_pixels(request: Request) -> int:
    p = request.params
    return (p.width or 1) * (p.height or 1) * (p.num_frames or 1)


class InlineStages:
    """Encode and decode at once, on the caller's thread."""

    def __init__(self, adapter: FamilyAdapter) -> None:
        self.adapter = adapter
        self.records: collections.deque[StageRecord] = collections.deque(maxlen=NUM_STAGE_RECORDS)
        self._results = StageResults()
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
        for group in group_by_shape(requests):
            self._run("decode", self.decode, group)

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
            self._results.failed.update(failed)
            done = self._results.encoded if kind == "encode" else self._results.decoded
            done.extend(r.request_id for r in requests if r.request_id not in failed)

    def has_results(self) -> bool:
        with self._lock:
            results = self._results
            return bool(results.encoded or results.decoded or results.failed)

    def collect(self) -> StageResults:
        with self._lock:
            results, self._results = self._results, StageResults()
            return results

    def close(self) -> None:
        """Nothing runs in the background."""


@dataclass(slots=True)
class DecodeJob:
    request: Request
    queued_at: float
    ready: torch.cuda.Event | None  # the step that made its latents, on the engine's stream


class ThreadStages(InlineStages):
    """The same stages on worker threads; `notify` wakes the engine when work finishes."""

    def __init__(self, adapter: FamilyAdapter, notify: Callable[[], None]) -> None:
        super().__init__(adapter)
        self.notify = notify
        self._lock = threading.Condition()
        self._encodes: collections.deque[Request] = collections.deque()
        self._decodes: collections.deque[DecodeJob] = collections.deque()
        self._stopping = False
        cuda = adapter.device.type == "cuda"
        self._engine_stream = torch.cuda.current_stream(adapter.device) if cuda else None
        self._streams: dict[str, torch.cuda.Stream | None] = {}
        self._threads = [
            threading.Thread(target=self._main, args=(kind,), name=f"omni-{kind}", daemon=True)
            for kind in ("encode", "decode")
        ]
        for thread in self._threads:
            thread.start()

    def submit_encode(self, requests: list[Request]) -> None:
        with self._lock:
            self._encodes.extend(requests)
            self._lock.notify_all()

    def submit_decode(self, requests: list[Request]) -> None:
        ready = None
        if self._engine_stream is not None:
            ready = torch.cuda.Event()
            ready.record(self._engine_stream)
        now = time.monotonic()
        with self._lock:
            self._decodes.extend(DecodeJob(r, now, ready) for r in requests)
            self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)

    def _main(self, kind: str) -> None:
        device = self.adapter.device
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._streams[kind] = stream
        stage = self._encode_on_stream if kind == "encode" else self._decode_on_stream
        with torch.inference_mode(), torch.cuda.stream(stream):
            while (job := self._next_job(kind)) is not None:
                requests, ready = job
                if ready is not None:
                    stream.wait_event(ready)
                self._run(kind, stage, requests)
                self.notify()

    def _encode_on_stream(self, requests: list[Request]) -> None:
        stream = self._streams["encode"]
        self.encode(requests)
        if stream is not None:
            for request in requests:  # freed later on the engine's stream, not reused early
                for tensor in request_tensors(request):
                    tensor.record_stream(self._engine_stream)
            stream.synchronize()

    def _decode_on_stream(self, requests: list[Request]) -> None:
        stream = self._streams["decode"]
        if stream is not None:
            for request in requests:
                request.latents.record_stream(stream)
        self.decode(requests)

    def _next_job(self, kind: str) -> tuple[list[Request], torch.cuda.Event | None] | None:
        """The next batch of `kind`; None once stopping."""
        with self._lock:
            while not self._stopping:
                if kind == "encode" and self._encodes:
                    count = min(MAX_ENCODE_BATCH, len(self._encodes))
                    return [self._encodes.popleft() for _ in range(count)], None
                if kind == "decode" and self._decodes:
                    wait = self._decode_wait()
                    if wait <= 0:
                        return self._take_decodes()
                    self._lock.wait(wait)
                else:
                    self._lock.wait()
            return None

    def _decode_wait(self) -> float:
        """Seconds to wait for more same-shaped decodes: only while the batch is not full."""
        head = self._decodes[0]
        shape = output_shape(head.request)
        same = sum(1 for job in self._decodes if output_shape(job.request) == shape)
        if same >= MAX_DECODE_BATCH:
            return 0.0
        return head.queued_at + DECODE_WINDOW_S - time.monotonic()

    def _take_decodes(self) -> tuple[list[Request], torch.cuda.Event | None]:
        shape = output_shape(self._decodes[0].request)
        taken: list[DecodeJob] = []
        pixels = 0
        for job in list(self._decodes):
            if output_shape(job.request) != shape or len(taken) >= MAX_DECODE_BATCH:
                continue
            if taken and pixels + output_pixels(job.request) > MAX_DECODE_PIXELS:
                break
            taken.append(job)
            pixels += output_pixels(job.request)
        for job in taken:
            self._decodes.remove(job)
        return [job.request for job in taken], taken[-1].ready


def request_tensors(request: Request) -> list[torch.Tensor]:
    """The tensors an encode made for a request: its latents, sigmas and conditioning."""
    values = [request.latents, request.sigmas]
    cond = request.cond
    if is_dataclass(cond):
        values += [getattr(cond, f.name) for f in fields(cond)]
    return [value for value in values if isinstance(value, torch.Tensor) and value.is_cuda]
