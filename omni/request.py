"""One request's whole state: its parameters, its tensors and its progress."""

from __future__ import annotations

import enum
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from omni.lora.spec import LoraSpec


class RequestStatus(enum.IntEnum):
    WAITING = 0
    ENCODING = 1
    DENOISING = 2
    DECODING = 3
    # Everything from here on is finished.
    FINISHED = 10
    FAILED = 11
    ABORTED = 12

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameInterpolation:
    """RIFE run on a video's decoded frames: each gap gets 2**exp - 1 new frames."""

    model: str  # a flownet.pkl directory inside --frame-interpolation-dir, or a built-in name
    exp: int = 1
    scale: float = 1.0  # RIFE's flow-estimation resolution: 0.5 estimates flow at half size

    @property
    def factor(self) -> int:
        return 2**self.exp


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationParams:
    """What a client asked for. `None` means "the model's default" until the adapter resolves it."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    seed: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None
    image: Any = None  # a PIL image conditioning image-to-video, or the image an edit starts from
    mask: Any = None  # an edit's repaint mask (PIL, white = repaint), the image's size
    strength: float | None = None  # how far down the schedule an edit starts (1: from noise)
    priority: int | None = None  # --scheduling-policy priority: lower runs first (None: 0)
    sampler: str | None = None  # a name in omni.samplers.SAMPLERS (None: the model's own)
    cache: str | None = None  # "none", "fbcache" or "taylorseer" (None: the server's default)
    cache_threshold: float | None = None  # fbcache's (None: its default); taylorseer takes none
    partial_images: int | None = None  # previews decoded while it denoises (None: none)
    lora: tuple[LoraSpec, ...] | None = None  # adapters to apply, stacked (omni.lora)
    # Applied to the decoded frames after the engine is done with the request, not by it.
    frame_interpolation: FrameInterpolation | None = None

    @property
    def output_num_frames(self) -> int:
        """Frames of the video a client gets: N made frames become (N - 1) * 2**exp + 1."""
        frames = self.num_frames or 1
        if self.frame_interpolation is None:
            return frames
        return (frames - 1) * self.frame_interpolation.factor + 1

    @property
    def output_fps(self) -> int | None:
        """The fps the video plays at: times 2**exp when interpolated, so its length stays."""
        if self.fps is None or self.frame_interpolation is None:
            return self.fps
        return self.fps * self.frame_interpolation.factor


@dataclass(eq=False)
class Request:
    """Scheduler fields are plain Python; the adapter and the runner fill the tensor fields."""

    request_id: str
    params: GenerationParams
    # One key per denoising step (the denoiser that runs it): equal keys may share a forward.
    step_keys: tuple[Hashable, ...]
    num_rows: int = 1  # rows this request adds to a forward: 2 with real CFG
    tokens_per_row: int = 1  # sequence length of one row: what a forward's budget counts
    pad_group: Hashable = None  # rows padded together: other groups run as calls of their own
    status: RequestStatus = RequestStatus.WAITING
    step_index: int = 0
    arrival_step: int = 0  # the engine step count when it was queued
    last_progress_step: int = 0  # the step it last ran (or arrived): what starvation counts
    error: str | None = None

    # Filled by the family adapter.
    cond: Any = None
    latents: Any = None
    sigmas: Any = None  # float32, num_steps + 1
    timesteps: Any = None  # the `t` its pipeline would hand the transformer at each step
    sampler: Any = None  # the omni.samplers.Sampler that updates it
    sampler_state: Any = None  # that sampler's history for this request (step sizes, past x0)
    cache: Any = None  # its omni.cache.RequestCache while it denoises with a step cache
    blend: Any = None  # a callable(request) -> latents run after each update (inpainting)
    lora: Any = None  # its loaded adapters (omni.lora.RowStack), pinned while it lives
    output: Any = None

    arrival_time: float = field(default_factory=time.monotonic)
    first_step_time: float | None = None
    finish_time: float | None = None

    @property
    def num_steps(self) -> int:
        return len(self.step_keys)

    @property
    def batch_key(self) -> Hashable:
        return self.step_keys[min(self.step_index, self.num_steps - 1)]

    @property
    def is_denoised(self) -> bool:
        return self.step_index >= self.num_steps

    @property
    def remaining_steps(self) -> int:
        return self.num_steps - self.step_index

    @property
    def rank_priority(self) -> int:
        return self.params.priority or 0
