"""Every bound on a request's numbers, defined once: the HTTP schemas and the adapters read these.

A field past its bound is refused before any work: by the schema (422) when it comes over HTTP,
by the adapter (400, InvalidRequestError) when it comes from Python.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_STEPS = 1000
MAX_GUIDANCE = 100.0
MAX_SEED = 2**63 - 1
MAX_SIDE = 4096  # pixels; a model may allow less (ModelInfo.max_side)
MAX_NUM_FRAMES = 1001
MAX_FPS = 120
MAX_SECONDS = 3600.0  # seconds * MAX_FPS frames stays a small finite number
MIN_FLOW_SHIFT, MAX_FLOW_SHIFT = 0.1, 100.0
MAX_IMAGES = 10  # n of one image request
MAX_EDIT_IMAGES = 16  # `image` files one edit request may upload (OpenAI's limit)
MAX_PARTIAL_IMAGES = 3  # previews a streamed image request may ask for (OpenAI's bound)
# RIFE frame interpolation: exp 1 doubles the frame rate, 4 multiplies it by 16; scale is the
# resolution RIFE estimates flow at (Practical-RIFE offers 0.25 to 4).
MIN_FRAME_INTERPOLATION_EXP, MAX_FRAME_INTERPOLATION_EXP = 1, 4
MIN_FRAME_INTERPOLATION_SCALE, MAX_FRAME_INTERPOLATION_SCALE = 0.25, 4.0
MAX_PROMPT_CHARS = 32_000  # bounds tokenizer time on the engine thread

DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 100
MAX_FORM_FIELDS = 100  # a video form has about 25 fields; the rest is an attack

DEFAULT_MAX_QUEUED_VIDEO_JOBS = 1024  # accepted jobs waiting in the store for the engine
MAX_IDEMPOTENCY_KEY_CHARS = 255

DEFAULT_MAX_BATCH_SIZE = 64  # rows in one forward, whatever the token budget
DEFAULT_MAX_NUM_RUNNING = 64
DEFAULT_MAX_NUM_WAITING = 256
DEFAULT_MAX_STARVATION_STEPS = 64
DEFAULT_SCHEDULING_POLICY = "fcfs"
# Rows of different sizes share a forward padded to the longest while the padded tokens stay
# within this multiple of the real ones; sizes further apart take turns in forwards of their own.
MAX_PADDING_RATIO = 1.25
# Step caching: "none", First-Block Cache (its threshold bounds a relative L1 change) or
# TaylorSeer (a fixed schedule: it takes no threshold).
CACHE_TYPES = ("none", "fbcache", "taylorseer")
# fbcache's default sits between diffusers' FirstBlockCacheConfig (0.05) and nunchaku's FLUX
# default (0.12): on a briefly trained FLUX-shaped model 0.05 skipped 0-7 of 28 steps and 0.1
# skipped 14, at a mean of 1.3-1.7 pixel levels (BENCHMARKS.md, "Step caching on the CPU").
DEFAULT_CACHE_THRESHOLDS = {"fbcache": 0.1}
MAX_CACHE_THRESHOLD = 10.0
MAX_PRIORITY = 2**31 - 1  # priorities run from -MAX_PRIORITY (first) to MAX_PRIORITY
# LoRA: adapters one request may stack, the bound of each one's scale, and the server's defaults
# for --max-loras (adapters held on the device, least recently used evicted) and --max-lora-rank.
MAX_LORAS_PER_REQUEST = 8
MAX_LORA_SCALE = 100.0
DEFAULT_MAX_LORAS = 8
DEFAULT_MAX_LORA_RANK = 128

Steps = Annotated[int, msgspec.Meta(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_GUIDANCE)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)]
Priority = Annotated[int, msgspec.Meta(ge=-MAX_PRIORITY, le=MAX_PRIORITY)]
Side = Annotated[int, msgspec.Meta(ge=1, le=MAX_SIDE)]
NumFrames = Annotated[int, msgspec.Meta(ge=1, le=MAX_NUM_FRAMES)]
Fps = Annotated[int, msgspec.Meta(ge=1, le=MAX_FPS)]
Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=MAX_SECONDS)]
FlowShift = Annotated[float, msgspec.Meta(ge=MIN_FLOW_SHIFT, le=MAX_FLOW_SHIFT)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Strength = Ratio  # an edit's: how far down the noise schedule it starts
NumImages = Annotated[int, msgspec.Meta(ge=1, le=MAX_IMAGES)]
PartialImages = Annotated[int, msgspec.Meta(ge=0, le=MAX_PARTIAL_IMAGES)]
Percent = Annotated[int, msgspec.Meta(ge=0, le=100)]
FrameInterpolationExp = Annotated[
    int, msgspec.Meta(ge=MIN_FRAME_INTERPOLATION_EXP, le=MAX_FRAME_INTERPOLATION_EXP)
]
FrameInterpolationScale = Annotated[
    float, msgspec.Meta(ge=MIN_FRAME_INTERPOLATION_SCALE, le=MAX_FRAME_INTERPOLATION_SCALE)
]
# Fields whose out-of-range values are a 400 naming the range, as vLLM-Omni answers for them,
# rather than the schema's 422.
RANGES_AS_400 = {
    "frame_interpolation_exp": (MIN_FRAME_INTERPOLATION_EXP, MAX_FRAME_INTERPOLATION_EXP),
    "frame_interpolation_scale": (MIN_FRAME_INTERPOLATION_SCALE, MAX_FRAME_INTERPOLATION_SCALE),
}
LoraScale = Annotated[float, msgspec.Meta(ge=-MAX_LORA_SCALE, le=MAX_LORA_SCALE)]
