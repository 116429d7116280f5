"""The thread that interpolates finished videos, beside the engine and never on its thread.

The engine hands back decoded frames; the HTTP side gives them to `Interpolator.run`, which
runs RIFE on a thread of its own (on CUDA, on a stream of its own), so the denoise loop keeps
stepping other requests meanwhile. Loaded models are kept, the most recently used few.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from omni.interpolation.frames import DEFAULT_MAX_PAIRS, interpolate_frames
from omni.interpolation.ifnet import IFNet
from omni.interpolation.weights import load_model
from omni.request import FrameInterpolation

THREAD_NAME = "omni-interpolation"
MAX_LOADED_MODELS = 2
MAX_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class InterpolationRecord:
    """One video interpolated: where it ran, what it made, how long it took."""

    thread: str
    model: str
    frames_in: int
    frames_out: int
    seconds: float


class Interpolator:
    def __init__(self, device: torch.device, max_pairs: int = DEFAULT_MAX_PAIRS) -> None:
        self.device = device
        self.max_pairs = max_pairs
        self.records: deque[InterpolationRecord] = deque(maxlen=MAX_RECORDS)
        self._models: OrderedDict[str, IFNet] = OrderedDict()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)
        self._stream: torch.cuda.Stream | None = None

    async def check(self, spec: FrameInterpolation) -> None:
        """Load the model a request names (kept for its run); InvalidRequestError if it fails.

        Loading runs on a thread of its own, not behind a video being interpolated.
        """
        await asyncio.to_thread(self.model, spec.model)

    async def run(self, frames: np.ndarray, spec: FrameInterpolation | None) -> np.ndarray:
        """The frames interpolated as `spec` says (as they are when it is None)."""
        if spec is None:
            return frames
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._interpolate, frames, spec)

    def model(self, name: str) -> IFNet:
        with self._lock:
            net = self._models.get(name)
            if net is not None:
                self._models.move_to_end(name)
                return net
        net = load_model(name).to(self.device)
        with self._lock:
            self._models[name] = net
            while len(self._models) > MAX_LOADED_MODELS:
                self._models.popitem(last=False)
        return net

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._models.clear()

    def _interpolate(self, frames: np.ndarray, spec: FrameInterpolation) -> np.ndarray:
        start = time.monotonic()
        net = self.model(spec.model)
        if self.device.type == "cuda" and self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            made = interpolate_frames(net, frames, spec.exp, spec.scale, self.max_pairs)
        record = InterpolationRecord(
            threading.current_thread().name,
            spec.model,
            len(frames),
            len(made),
            time.monotonic() - start,
        )
        self.records.append(record)
        return made
