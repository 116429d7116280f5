"""Engine configuration: one frozen dataclass, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from omni.cache import check_cache
from omni.errors import InvalidRequestError
from omni.limits import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_LORA_RANK,
    DEFAULT_MAX_LORAS,
    DEFAULT_MAX_NUM_RUNNING,
    DEFAULT_MAX_NUM_WAITING,
    DEFAULT_MAX_STARVATION_STEPS,
    DEFAULT_SCHEDULING_POLICY,
)
from omni.scheduler import SchedulerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_BACKENDS = ("auto", "sdpa", "flash", "xformers")
CFG_PARALLEL_SIZES = (1, 2)  # 2: the cond and uncond rows on two ranks


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model: str = "omni-tiny"
    served_model_name: str | None = None
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    max_num_batched_tokens: int | None = None  # None: the knee of a start-up profile
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_num_running: int = DEFAULT_MAX_NUM_RUNNING
    max_num_waiting: int = DEFAULT_MAX_NUM_WAITING
    scheduling_policy: str = DEFAULT_SCHEDULING_POLICY
    max_starvation_steps: int = DEFAULT_MAX_STARVATION_STEPS
    overlap_stages: bool = True  # encode and decode on a worker thread beside the forward
    profile_seconds: float = 10.0  # start-up profile's time limit; 0 skips it
    cfg_parallel_size: int = 1
    attention_backend: str = "auto"
    max_output_pixels: int | None = None  # width x height x frames of one output; None: no cap
    cache: str = "none"  # the step cache of requests that do not choose one
    cache_threshold: float | None = None  # None: the cache type's default
    lora_modules: tuple[tuple[str, str], ...] = ()  # (name, path) adapters requests may name
    lora_dir: str | None = None  # the allow-list root of a request's lora local_path
    max_loras: int = DEFAULT_MAX_LORAS  # adapters held on the device at once (LRU)
    max_lora_rank: int = DEFAULT_MAX_LORA_RANK

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {self.dtype}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but torch sees no CUDA device")
        if self.cfg_parallel_size not in CFG_PARALLEL_SIZES:
            sizes = " or ".join(str(size) for size in CFG_PARALLEL_SIZES)
            raise ValueError(f"cfg_parallel_size must be {sizes}")
        if self.attention_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"attention_backend must be one of {', '.join(ATTENTION_BACKENDS)}")
        if self.profile_seconds < 0:
            raise ValueError("profile_seconds must not be negative")
        if self.max_output_pixels is not None and self.max_output_pixels < 1:
            raise ValueError("max_output_pixels must be at least 1")
        _ = self.scheduler_config  # SchedulerConfig validates the queue limits
        self._check_lora()
        try:
            check_cache(self.cache, self.cache_threshold)
        except InvalidRequestError as exc:
            raise ValueError(f"--cache: {exc}") from None

    def _check_lora(self) -> None:
        if self.max_loras < 1 or self.max_lora_rank < 1:
            raise ValueError("max_loras and max_lora_rank must be at least 1")
        names = [name for name, _ in self.lora_modules]
        if len(set(names)) < len(names) or not all(names):
            raise ValueError("--lora-modules names must be non-empty and distinct")
        for name, path in self.lora_modules:
            if not Path(path).expanduser().exists():
                raise ValueError(f"--lora-modules {name}={path}: no such file or directory")
        if self.lora_dir is not None and not Path(self.lora_dir).expanduser().is_dir():
            raise ValueError(f"--lora-dir {self.lora_dir} is not a directory")
        if self.lora_enabled and self.cfg_parallel_size > 1:
            raise ValueError("LoRA is not available with --cfg-parallel-size 2")

    @property
    def lora_enabled(self) -> bool:
        return bool(self.lora_modules) or self.lora_dir is not None

    @property
    def name(self) -> str:
        return self.served_model_name or self.model

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype != "auto":
            return DTYPES[self.dtype]
        return torch.bfloat16 if self.torch_device.type == "cuda" else torch.float32

    @property
    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(
            max_num_batched_tokens=self.max_num_batched_tokens,
            max_batch_size=self.max_batch_size,
            max_num_running=self.max_num_running,
            max_num_waiting=self.max_num_waiting,
            policy=self.scheduling_policy,
            max_starvation_steps=self.max_starvation_steps,
        )
