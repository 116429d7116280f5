"""What the text-to-image families (FLUX, FLUX.2, Qwen-Image, SD3, Z-Image) have in common.

Their diffusers pipelines load, default, validate, encode prompts and decode the same way; only
the transformer call, the latent layout, the schedule and the CFG rule differ. `ImageAdapter`
holds the shared steps and asks each family for those differences through class attributes and
small hooks, so a family module reads as the list of what its pipeline does differently.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from omni.limits import MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.text_cache import Embedding, TextEmbeddingCache
from omni.request import GenerationParams, Request

IMAGE_FIELDS = frozenset(
    {"prompt", "negative_prompt", "width", "height", "num_inference_steps", "guidance_scale",
     "seed"}
)  # fmt: skip
TRUE_CFG_FIELDS = IMAGE_FIELDS | {"true_cfg_scale"}


@dataclass(slots=True)
class TextCond:
    """A request's prompt embeddings, and the negative prompt's when it runs CFG."""

    prompt_embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None

    def add_negative(self, negative: TextCond) -> None:
        self.negative_embeds = negative.prompt_embeds

    def embeds(self, uncond: bool) -> torch.Tensor:
        """The text a row reads: the negative prompt's for an unconditional row."""
        return self.negative_embeds if uncond else self.prompt_embeds


@dataclass(slots=True)
class PooledTextCond:
    """TextCond with a pooled text projection (CLIP's) beside each sequence."""

    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    def add_negative(self, negative: PooledTextCond) -> None:
        self.negative_embeds = negative.prompt_embeds
        self.negative_pooled = negative.pooled

    def embeds(self, uncond: bool) -> torch.Tensor:
        return self.negative_embeds if uncond else self.prompt_embeds

    def pooled_for(self, uncond: bool) -> torch.Tensor:
        return self.negative_pooled if uncond else self.pooled


def uses_true_cfg(params: GenerationParams) -> bool:
    """diffusers' FLUX and Qwen-Image rule: real CFG needs a negative prompt (even " ") and
    true_cfg_scale above 1; without a negative prompt the scale does nothing."""
    return params.negative_prompt is not None and (params.true_cfg_scale or 1.0) > 1.0


class ImageAdapter(FamilyAdapter):
    """A diffusers text-to-image pipeline as a FamilyAdapter: the family names its pipeline,
    defaults and batch key, and supplies encoding, noise layout, forward and CFG rule."""

    kind: ClassVar = "image"
    supported_fields: ClassVar = IMAGE_FIELDS
    pipeline_class: ClassVar[Any]  # the diffusers pipeline class the family loads
    family: ClassVar[str]  # the first element of every batch key
    size_in_key: ClassVar[bool] = False  # whether each latent size runs its own forwards
    cond_class: ClassVar[type[TextCond] | type[PooledTextCond]] = TextCond
    cfg_field: ClassVar[str] = "guidance_scale"  # the param that scales real CFG
    patch_size: int = 2  # latent pixels a side per transformer token
    default_side: ClassVar[int | None] = None  # None: the pipeline's default sample size
    default_steps: ClassVar[int]
    default_guidance: ClassVar[float | None] = None
    default_true_cfg: ClassVar[float | None] = None  # filled in when a request leaves it out
    can_edit: ClassVar[bool] = False  # image-to-image and inpainting (FLUX: omni.models.flux_edit)

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = self._load_pipeline(model_dir, dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.init_samplers(self.scheduler_config)
        self.vae_scale_factor = self.pipe.vae_scale_factor
        config = self.pipe.transformer.config
        self.has_guidance_embeds = bool(getattr(config, "guidance_embeds", False))
        side = self.default_side or self.pipe.default_sample_size * self.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir,
            width=side,
            height=side,
            num_inference_steps=self.default_steps,
            guidance_scale=self.default_guidance,
        )
        self.text_cache = TextEmbeddingCache(self._encode_texts)
        self._setup()

    def _load_pipeline(self, model_dir: Path, dtype: torch.dtype) -> Any:
        return self.pipeline_class.from_pretrained(model_dir, dtype=dtype)

    def _setup(self) -> None:
        """What a family reads from its loaded pipeline beyond the shared attributes."""

    # Model -------------------------------------------------------------------------------------

    @property
    def max_side(self) -> int:
        """The largest width or height the transformer takes."""
        return MAX_SIDE

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.vae_scale_factor * self.patch_size,
            max_side=self.max_side,
            can_edit=self.can_edit,
        )

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer]

    # Requests ----------------------------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        guidance = d.guidance_scale if params.guidance_scale is None else params.guidance_scale
        self.check_guidance(guidance)
        true_cfg = params.true_cfg_scale
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=guidance,
            true_cfg_scale=self.default_true_cfg if true_cfg is None else true_cfg,
        )

    def check_guidance(self, guidance: float | None) -> None:
        """A family's own rule for the resolved guidance_scale; raises InvalidRequestError."""

    @abstractmethod
    def uses_cfg(self, params: GenerationParams) -> bool:
        """The pipeline's rule for running real CFG (an unconditional row) on resolved params."""

    def cfg_scale(self, request: Request) -> float | None:
        params = request.params
        return getattr(params, self.cfg_field) if self.uses_cfg(params) else None

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        size = self._latent_size(params) if self.size_in_key else ()
        key = (self.family, *size)
        return (key,) * params.num_inference_steps, 2 if self.uses_cfg(params) else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        return self._image_tokens(params) + self._text_tokens(params)

    @abstractmethod
    def _text_tokens(self, params: GenerationParams) -> int:
        """The text sequence length a row of these params puts through the transformer."""

    def _image_tokens(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        return (height // self.patch_size) * (width // self.patch_size)

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        return params.height // self.vae_scale_factor, params.width // self.vae_scale_factor

    def _row_texts(self, params: GenerationParams) -> list[str]:
        """The texts a request's rows read: its prompt, and the negative prompt under CFG
        ("" when none is given, the pipelines' default)."""
        if self.uses_cfg(params):
            return [params.prompt, params.negative_prompt or ""]
        return [params.prompt]

    # Encoding and noise ------------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        """Every prompt, then the guided requests' negative prompts, through the text cache;
        then each request's seeded noise and sampler."""
        guided = [r for r in requests if self.uses_cfg(r.params)]
        texts = [r.params.prompt for r in requests]
        encoded = self._encode([*texts, *(self._row_texts(r.params)[1] for r in guided)])
        for embedding, request in zip(encoded, requests, strict=False):
            request.cond = self._text_cond(embedding)
            request.latents = self._initial_latents(request.params, request.cond).to(self.device)
            self.start_sampling(request)
        for embedding, request in zip(encoded[len(requests) :], guided, strict=True):
            request.cond.add_negative(self._text_cond(embedding))

    def _encode(self, texts: list[str]) -> list[Embedding]:
        """Each text's embedding; the texts the cache lacks are encoded in one call."""
        return self.text_cache(texts)

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> Embedding:
        """The pipeline's prompt encoding of texts, row i belonging to text i."""

    def _text_cond(self, embedding: Embedding) -> TextCond | PooledTextCond:
        return self.cond_class(*embedding)

    def _initial_latents(self, params: GenerationParams, cond: Any) -> torch.Tensor:
        """The request's seeded noise in the layout the transformer takes (on the CPU)."""
        height, width = self._latent_size(params)
        shape = (1, self._noise_channels(), height, width)
        return self._pack(seeded_noise(shape, params.seed, self._noise_dtype(cond)))

    @abstractmethod
    def _noise_channels(self) -> int:
        """Channels of the noise the pipeline draws, before any packing."""

    def _noise_dtype(self, cond: Any) -> torch.dtype:
        """The pipelines draw their noise in the prompt embeddings' dtype."""
        return cond.prompt_embeds.dtype

    def _pack(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise to the transformer's latent layout; unpacked latents pass as they are."""
        return noise

    # Denoising ---------------------------------------------------------------------------------

    def _timesteps(self, rows: list[Row]) -> torch.Tensor:
        """Each row's scheduler timestep at its request's current step (on the CPU)."""
        return torch.stack([r.request.timesteps[r.request.step_index] for r in rows])

    def _guidance(self, rows: list[Row]) -> torch.Tensor | None:
        """The rows' guidance_scale for a guidance-distilled transformer's embedding."""
        if not self.has_guidance_embeds:
            return None
        scales = [r.request.params.guidance_scale for r in rows]
        return torch.tensor(scales, dtype=torch.float32, device=self.device)

    # Decoding ----------------------------------------------------------------------------------

    def decode(self, requests: list[Request]) -> list[Any]:
        latents = self._vae_input(torch.cat([r.latents for r in requests]), requests[0].params)
        images = self._vae_decode(latents)
        return self.pipe.image_processor.postprocess(images, output_type="pil")

    def _vae_input(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        """Finished latents as the VAE decodes them: the FLUX VAE's scale and shift undone."""
        config = self.pipe.vae.config
        return self._unpack(latents, params) / config.scaling_factor + config.shift_factor

    def _unpack(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        """Latents back in the VAE's layout and dtype; unpacked latents pass as they are."""
        return latents

    def _vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe.vae.decode(latents, return_dict=False)[0]


class TrueCFGAdapter(ImageAdapter):
    """FLUX's and Qwen-Image's "true CFG": a negative prompt and true_cfg_scale turn it on,
    while guidance_scale feeds a guidance-distilled transformer's embedding."""

    supported_fields = TRUE_CFG_FIELDS
    cfg_field = "true_cfg_scale"

    def uses_cfg(self, params: GenerationParams) -> bool:
        return uses_true_cfg(params)
