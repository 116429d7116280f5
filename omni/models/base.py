"""The contract between the generic engine and one model family's adapter."""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from omni.cache import (
    STEP_CACHES,
    cached_forward,
    step_cache_problem,
    taylorseer_problem,
)
from omni.errors import InvalidRequestError
from omni.flow import cfg_combine_all
from omni.lora.manager import LoraManager
from omni.lora.rows import assigned
from omni.models.checks import check_common
from omni.request import GenerationParams, Request
from omni.samplers import Sampler, Schedule, ScheduleInputs, samplers_for

SERVING_DEFAULTS_FILE = "omni.json"
# Fields every family takes: the scheduler's, and those the engine applies (the sampler, the
# step cache, previews, LoRA: the engine refuses it for a family whose `supports_lora` is False).
COMMON_FIELDS = frozenset(
    {"priority", "sampler", "cache", "cache_threshold", "partial_images", "lora"}
)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the HTTP side needs to know about the loaded model."""

    name: str
    kind: Literal["image", "video"]
    default_width: int
    default_height: int
    size_multiple: int  # width and height must be multiples of this
    max_side: int
    default_fps: int | None = None
    default_num_frames: int | None = None
    takes_image: bool = False  # an image-to-video model: requests carry a reference image
    # The RIFE model of requests that name none (omni.json's `frame_interpolation_model`).
    default_frame_interpolation_model: str | None = None
    can_edit: bool = False  # takes /v1/images/edits: image, mask and strength
    max_edit_images: int = 1  # images one edit reads (Qwen-Image-Edit-2509 and later: several)


@dataclass(frozen=True, slots=True)
class ServingDefaults:
    """Defaults for fields a client leaves out; a model directory may override them in omni.json."""

    width: int | None = None
    height: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    num_frames: int | None = None
    fps: int | None = None
    frame_interpolation_model: str | None = None

    @classmethod
    def read(cls, model_dir: Path, **base: Any) -> ServingDefaults:
        path = model_dir / SERVING_DEFAULTS_FILE
        overrides = json.loads(path.read_text()) if path.is_file() else {}
        known = {f.name for f in fields(cls)}
        return cls(**{**base, **{k: v for k, v in overrides.items() if k in known}})


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a transformer forward: a request's conditional or unconditional branch."""

    request: Request
    uncond: bool = False


class FamilyAdapter(ABC):
    """Everything model-specific: encoding, latents, the batched forward, decoding, defaults.

    The stage thread calls `prepare` on newly admitted requests and `decode` on requests whose
    steps are done; the engine thread calls `predict` once per step on the requests that share a
    denoiser (any sizes). `predict` is rows -> one `forward` -> `combine`, so CFG-parallel ranks
    can each run a share of the rows. Tensors live on the request; the adapter keeps no
    per-request state of its own, and the two threads never touch the same modules.
    """

    kind: ClassVar[Literal["image", "video"]]
    defaults: ServingDefaults  # set by each family when it loads
    supported_fields: ClassVar[frozenset[str]]
    # The transformer blocks' arguments that carry one entry per row: what First-Block Cache
    # slices when only some rows run the remaining blocks (the rest are shared by all rows).
    cache_row_args: ClassVar[frozenset[str]] = frozenset(
        {"hidden_states", "encoder_hidden_states", "temb"}
    )
    # The attention modules' arguments that carry one entry per row: what TaylorSeer slices when
    # only some rows compute. None: TaylorSeer is not wired for the family (refused).
    taylorseer_row_args: ClassVar[frozenset[str] | None] = None
    # The modules TaylorSeer hooks (diffusers' `cache_identifiers`: regexes on module names);
    # None: diffusers' default, the attention modules of blocks named as FLUX's and SD3's.
    taylorseer_modules: ClassVar[tuple[str, ...] | None] = None
    # Whether per-row LoRA (omni.lora) is wired: every Linear of `lora_target`'s transformer
    # sees the forward's rows along its first dimension.
    supports_lora: ClassVar[bool] = False

    def __init__(self, name: str, device: torch.device, dtype: torch.dtype) -> None:
        self.name = name
        self.device = device
        self.dtype = dtype
        self.loras: LoraManager | None = None  # set by the engine when LoRA is enabled
        self.default_sampler = "euler"
        self.samplers: dict[str, Sampler] = {}

    # Sampling ----------------------------------------------------------------------------------

    def init_samplers(self, scheduler_config: dict[str, Any]) -> None:
        """Every sampler, the default being the scheduler class the pipeline ships."""
        self.default_sampler, self.samplers = samplers_for(scheduler_config)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """What the family's pipeline passes to set_timesteps (custom sigmas, mu, a shift)."""
        return ScheduleInputs()

    def has_own_flow_sigmas(self, params: GenerationParams) -> bool:
        """Whether the request's sampler makes its own flow sigmas (UniPC, DPM-Solver): the FLUX
        pipelines pass their custom sigmas only to schedulers that do not."""
        return bool(self.samplers[params.sampler].config.get("use_flow_sigmas"))

    def schedule(self, params: GenerationParams) -> Schedule:
        """The sigmas and timesteps resolved params run with."""
        sampler = self.samplers[params.sampler or self.default_sampler]
        return sampler.schedule(params.num_inference_steps, self.schedule_inputs(params))

    def start_sampling(self, request: Request) -> None:
        """Give a request its sampler, schedule and fresh sampler state (in `prepare`)."""
        sampler = self.samplers[request.params.sampler or self.default_sampler]
        schedule = sampler.schedule(request.num_steps, self.schedule_inputs(request.params))
        request.sampler = sampler
        request.sigmas = schedule.sigmas
        request.timesteps = schedule.timesteps
        request.sampler_state = sampler.start(schedule)

    @property
    @abstractmethod
    def info(self) -> ModelInfo: ...

    @abstractmethod
    def resolve(self, params: GenerationParams) -> GenerationParams:
        """Fill in the model's defaults and validate; raises InvalidRequestError."""

    @abstractmethod
    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        """(one batch key per step, rows per forward) for resolved params."""

    @abstractmethod
    def prepare(self, requests: list[Request]) -> None:
        """Encode prompts and make each request's initial latents and sigma schedule."""

    @abstractmethod
    def cfg_scale(self, request: Request) -> float | None:
        """The request's real-CFG scale at its current step; None when it runs without CFG."""

    @abstractmethod
    def tokens_per_row(self, params: GenerationParams) -> int:
        """The sequence length one row of this request puts through the denoiser."""

    def pad_group(self, params: GenerationParams) -> Hashable:
        """Which rows `forward` pads to one length: rows of other groups run as separate calls
        of the same step, so the scheduler weighs padding only within a group."""
        return None

    @abstractmethod
    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        """One batched forward over rows of one denoiser, of any sizes; one prediction per row,
        shaped like its request's latents."""

    def rows(self, requests: list[Request]) -> list[Row]:
        """Conditional rows for every request, then unconditional rows for those using CFG."""
        uncond = [Row(r, uncond=True) for r in requests if self.cfg_scale(r) is not None]
        return [Row(r) for r in requests] + uncond

    def predict(self, requests: list[Request]) -> list[torch.Tensor]:
        """One batched forward at each request's current step; one velocity per request."""
        rows = self.rows(requests)
        return self.combine(requests, rows, self.forward_rows(rows))

    def forward_rows(self, rows: list[Row]) -> list[torch.Tensor]:
        """`forward`, through the step caches when some row's request asks for one, with each
        row's LoRA adapters (its request's, for both CFG rows)."""
        with assigned([row.request.lora or () for row in rows]):
            if not any(row.request.params.cache in STEP_CACHES for row in rows):
                return self.forward(rows)
            return cached_forward(self, rows)

    def lora_target(self) -> tuple[type, torch.nn.Module]:
        """(the diffusers pipeline class whose `lora_state_dict` reads adapter files, the
        transformer its adapters apply to): the pipeline's `transformer`, as diffusers loads."""
        pipe = self.pipe  # type: ignore[attr-defined]
        return type(pipe), pipe.transformer

    def row_shape(self, row: Row) -> tuple:
        """What rows must share to run in one unpadded forward (the step cache groups by it)."""
        return tuple(row.request.latents.shape)

    def denoiser_for(self, rows: list[Row]) -> torch.nn.Module:
        """The module `forward` runs for these rows (one batch key)."""
        return self.denoisers()[0]

    @functools.cached_property
    def step_cache_problem(self) -> str | None:
        """Why First-Block Cache cannot run on this model; None when it can."""
        return step_cache_problem(self.denoisers())

    @functools.cached_property
    def taylorseer_problem(self) -> str | None:
        return taylorseer_problem(
            self.denoisers(), self.taylorseer_row_args, self.taylorseer_modules
        )

    def cache_problem(self, kind: str | None) -> str | None:
        """Why the step cache `kind` cannot run on this model; None when it can (or none)."""
        if kind == "taylorseer":
            return self.taylorseer_problem
        return self.step_cache_problem if kind == "fbcache" else None

    def combine(
        self, requests: list[Request], rows: list[Row], prediction: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Each request's velocity from its rows, with CFG at each request's own scale."""
        cond: dict[int, torch.Tensor] = {}
        uncond: dict[int, torch.Tensor] = {}
        for row, output in zip(rows, prediction, strict=True):
            (uncond if row.uncond else cond)[id(row.request)] = output
        velocities = [cond[id(r)] for r in requests]
        guided = [i for i, r in enumerate(requests) if id(r) in uncond]
        if guided:
            mixed = self.guide(
                [velocities[i] for i in guided],
                [uncond[id(requests[i])] for i in guided],
                [self.cfg_scale(requests[i]) for i in guided],
            )
            for i, velocity in zip(guided, mixed, strict=True):
                velocities[i] = velocity
        return velocities

    def guide(
        self, cond: list[torch.Tensor], uncond: list[torch.Tensor], scales: list[float]
    ) -> list[torch.Tensor]:
        """The CFG formula over the guided requests; a family whose pipeline mixes the two
        predictions its own way overrides this rather than all of `combine`."""
        return cfg_combine_all(cond, uncond, scales)

    def denoisers(self) -> list[torch.nn.Module]:
        """The modules whose attention backend --attention-backend sets."""
        return []

    @abstractmethod
    def decode(self, requests: list[Request]) -> list[Any]:
        """Decode same-shaped finished latents; one output per request."""

    def check_fields(self, params: GenerationParams) -> None:
        for f in fields(params):
            value = getattr(params, f.name)
            supported = f.name in self.supported_fields or f.name in COMMON_FIELDS
            if value is not None and not supported:
                raise InvalidRequestError(
                    f"{f.name} is not supported by {self.kind} model {self.name}", param=f.name
                )

    def check_common(self, params: GenerationParams) -> GenerationParams:
        """Validation every family shares (omni.models.checks); fills the seed and sampler."""
        return check_common(self, params)


def seeded_noise(shape: tuple[int, ...], seed: int, dtype: torch.dtype) -> torch.Tensor:
    """A request's own initial noise: drawn on the CPU so a seed means the same on every device."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=dtype)
