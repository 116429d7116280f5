"""ThreadStages: the encode and decode stages on worker threads of their own (on CUDA each with
its own stream), so the denoise loop never waits for them; see omni.engine.stages."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, is_dataclass

import torch

from omni.engine.partials import PreviewJob
from omni.engine.stages import (
    DECODE_WINDOW_S,
    MAX_DECODE_BATCH,
    MAX_DECODE_PIXELS,
    MAX_ENCODE_BATCH,
    InlineStages,
    output_pixels,
    output_shape,
)
from omni.models.base import FamilyAdapter
from omni.request import Request


@dataclass(slots=True)
class DecodeJob:
    request: Request
    queued_at: float
    ready: torch.cuda.Event | None  # the step that made its latents, on the engine's stream
    preview: PreviewJob | None = None  # a partial image, not the request's output

    @property
    def shape(self) -> tuple:
        """Jobs of equal shapes decode together; previews never with final outputs."""
        if self.preview is None:
            return ("output", *output_shape(self.request))
        return ("preview", *output_shape(self.request, self.preview.latents))


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
        self._queue_decodes([(r, None) for r in requests])

    def submit_previews(self, previews: list[PreviewJob]) -> None:
        self._queue_decodes([(p.request, p) for p in previews])

    def _queue_decodes(self, jobs: list[tuple[Request, PreviewJob | None]]) -> None:
        if not jobs:
            return
        ready = None
        if self._engine_stream is not None:
            ready = torch.cuda.Event()
            ready.record(self._engine_stream)
        now = time.monotonic()
        with self._lock:
            self._decodes.extend(DecodeJob(r, now, ready, preview) for r, preview in jobs)
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
                requests, previews, ready = job
                if ready is not None:
                    stream.wait_event(ready)
                if previews:
                    self._run_previews(previews)
                elif live := [r for r in requests if not r.status.is_finished]:
                    self._run(kind, stage, live)  # requests aborted while queued take no work
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

    def _run_previews(self, previews: list[PreviewJob]) -> None:
        stream = self._streams.get("decode")
        if stream is not None:  # made on the engine's stream, freed after use on this one
            for preview in previews:
                preview.latents.record_stream(stream)
        super()._run_previews(previews)

    def _next_job(
        self, kind: str
    ) -> tuple[list[Request], list[PreviewJob], torch.cuda.Event | None] | None:
        """The next batch of `kind` (outputs to decode, or previews); None once stopping."""
        with self._lock:
            while not self._stopping:
                if kind == "encode" and self._encodes:
                    count = min(MAX_ENCODE_BATCH, len(self._encodes))
                    return [self._encodes.popleft() for _ in range(count)], [], None
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
        shape = head.shape
        same = sum(1 for job in self._decodes if job.shape == shape)
        if same >= MAX_DECODE_BATCH:
            return 0.0
        return head.queued_at + DECODE_WINDOW_S - time.monotonic()

    def _take_decodes(
        self,
    ) -> tuple[list[Request], list[PreviewJob], torch.cuda.Event | None]:
        shape = self._decodes[0].shape
        taken: list[DecodeJob] = []
        pixels = 0
        for job in list(self._decodes):
            if job.shape != shape or len(taken) >= MAX_DECODE_BATCH:
                continue
            if taken and pixels + output_pixels(job.request) > MAX_DECODE_PIXELS:
                break
            taken.append(job)
            pixels += output_pixels(job.request)
        for job in taken:
            self._decodes.remove(job)
        previews = [job.preview for job in taken if job.preview is not None]
        return [job.request for job in taken], previews, taken[-1].ready


def request_tensors(request: Request) -> list[torch.Tensor]:
    """The tensors an encode made for a request: its latents, sigmas and conditioning."""
    values = [request.latents, request.sigmas]
    cond = request.cond
    if is_dataclass(cond):
        values += [getattr(cond, f.name) for f in fields(cond)]
    return [value for value in values if isinstance(value, torch.Tensor) and value.is_cuda]
