"""Wan family (Wan2.1 / Wan2.2): text-to-video, image-to-video, and two denoising experts.

Sampler. Wan checkpoints ship UniPCMultistepScheduler, and omni samples with it by default (its
history lives on each request, see omni.samplers), so outputs match WanPipeline as shipped. A
request's `flow_shift` replaces the shipped scheduler's shift; `sampler` picks another solver.

Experts. As in WanPipeline, `transformer` runs the steps whose timestep is at or above
`boundary_ratio * num_train_timesteps` (high noise) with `guidance_scale`; `transformer_2` runs
the rest (low noise) with `guidance_scale_2`, which defaults to `guidance_scale`.

Guidance. A step runs classifier-free guidance when its expert's scale is above 1, with the
negative prompt ("" by default). WanPipeline decides once, from `guidance_scale` alone; the two
rules agree whenever both scales are on the same side of 1.

Frames. The VAE keeps the first frame and packs every further 4 frames into one latent frame, so
a request's `num_frames` is rounded by `valid_num_frames`.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import DiffusionPipeline, WanImageToVideoPipeline

from omni.limits import MAX_NUM_FRAMES, MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.text_cache import TextEmbeddingCache
from omni.models.wan_i2v import image_conditions
from omni.models.wan_resolve import resolve_params
from omni.models.wan_rules import HIGH_NOISE, LOW_NOISE, guidance_for, shipped_shift, to_uint8
from omni.models.wan_varlen import padded_forward
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

MAX_SEQUENCE_LENGTH = 512


@dataclass(slots=True)
class WanCond:
    prompt_embeds: torch.Tensor  # [1, max_sequence_length, text_dim], zero-padded
    negative_embeds: torch.Tensor | None = None  # set when some step runs CFG
    image_condition: torch.Tensor | None = None  # image-to-video: [1, 4 + z_dim, frames, h, w]


class WanAdapter(FamilyAdapter):
    kind: ClassVar = "video"
    supported_fields: ClassVar = frozenset(
        {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_frames",
            "fps",
            "frame_interpolation",
            "num_inference_steps",
            "guidance_scale",
            "guidance_scale_2",
            "boundary_ratio",
            "flow_shift",
            "seed",
            "image",
        }
    )
    supports_lora = True  # into `transformer`, as diffusers loads (Wan2.2's second expert: none)
    # Self- and cross-attention of every block (diffusers' default patterns find none in Wan's
    # names). The rotary table of a forward's one video shape is shared; each expert's rows
    # keep their own TaylorSeer state (the step cache keys it by batch key, so by expert).
    taylorseer_modules = (r"^blocks\.\d+\.attn[12]",)
    taylorseer_row_args = frozenset({"hidden_states", "encoder_hidden_states", "attention_mask"})

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        # Wan's VAE is meant to run in float32 whatever the transformer's precision.
        dtypes = {"default": dtype, "vae": torch.float32}
        self.pipe = DiffusionPipeline.from_pretrained(model_dir, dtype=dtypes).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        pipe = self.pipe
        if pipe.transformer is None:
            raise NotImplementedError("Wan models without `transformer` are not supported")
        if pipe.config.get("expand_timesteps"):
            raise NotImplementedError("Wan2.2 TI2V (expand_timesteps) is not supported yet")
        if pipe.transformer.config.image_dim is not None:
            raise NotImplementedError("Wan2.1 image-to-video (CLIP image encoder) is not supported")
        self.is_image_to_video = isinstance(pipe, WanImageToVideoPipeline)
        self.experts = [pipe.transformer, pipe.transformer_2]
        self.has_two_experts = pipe.transformer_2 is not None
        scheduler_config = dict(pipe.scheduler.config)
        self.flow_shift = shipped_shift(scheduler_config)
        self.num_train_timesteps = scheduler_config.get("num_train_timesteps", 1000)
        self.init_samplers(scheduler_config)
        self.temporal = pipe.vae_scale_factor_temporal
        self.spatial = pipe.vae_scale_factor_spatial
        transformer_config = pipe.transformer.config
        _, patch_h, patch_w = transformer_config.patch_size
        self.size_multiple = self.spatial * max(patch_h, patch_w)
        rope_len = transformer_config.rope_max_seq_len
        self.max_side = min(MAX_SIDE, self.size_multiple * rope_len)
        max_latent_frames = rope_len * transformer_config.patch_size[0]
        self.max_num_frames = min(MAX_NUM_FRAMES, (max_latent_frames - 1) * self.temporal + 1)
        self.max_sequence_length = min(MAX_SEQUENCE_LENGTH, pipe.tokenizer.model_max_length)
        vae_config = pipe.vae.config
        self.z_dim = vae_config.z_dim
        stats_shape = (1, self.z_dim, 1, 1, 1)
        self.latents_mean = torch.tensor(vae_config.latents_mean).view(stats_shape).to(device)
        self.latents_inv_std = (1.0 / torch.tensor(vae_config.latents_std)).view(stats_shape)
        self.latents_inv_std = self.latents_inv_std.to(device)
        self.defaults = ServingDefaults.read(
            model_dir,
            width=832,
            height=480,
            num_inference_steps=50,
            guidance_scale=5.0,
            num_frames=81,
            fps=16,
        )
        self.default_boundary_ratio = pipe.config.get("boundary_ratio")
        self.text_cache = TextEmbeddingCache(self._encode_texts)
        # Image-to-video encodes on the encode stage's thread and decodes on the decode stage's:
        # AutoencoderKLWan keeps its causal-conv cache on the module, so one call at a time.
        self.vae_lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="video",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.size_multiple,
            max_side=self.max_side,
            default_fps=self.defaults.fps,
            default_num_frames=self.defaults.num_frames,
            default_frame_interpolation_model=self.defaults.frame_interpolation_model,
            takes_image=self.is_image_to_video,
        )

    # Requests --------------------------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        """Checks and defaults: see omni.models.wan_resolve."""
        return resolve_params(self, params)

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        experts = self._experts(params)
        keys = tuple(("wan", expert) for expert in experts)  # any size shares its expert
        uses_cfg = any(guidance_for(params, expert) is not None for expert in set(experts))
        return keys, 2 if uses_cfg else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        """Video tokens; the text enters by cross-attention, a smaller share of the cost."""
        _, _, frames, height, width = self._latent_shape(params)
        patch_t, patch_h, patch_w = self.experts[0].config.patch_size
        return (frames // patch_t) * (height // patch_h) * (width // patch_w)

    def _latent_shape(self, params: GenerationParams) -> tuple[int, ...]:
        num_latent_frames = (params.num_frames - 1) // self.temporal + 1
        height, width = params.height // self.spatial, params.width // self.spatial
        return (1, self.z_dim, num_latent_frames, height, width)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        return ScheduleInputs(shift=params.flow_shift)  # WanPipeline passes only the step count

    def _experts(self, params: GenerationParams) -> list[int]:
        num_steps = params.num_inference_steps
        if params.boundary_ratio is None:
            return [HIGH_NOISE] * num_steps
        boundary = params.boundary_ratio * self.num_train_timesteps
        is_high_noise = self.schedule(params).timesteps >= boundary
        return [HIGH_NOISE if high else LOW_NOISE for high in is_high_noise.tolist()]

    # Tensors ---------------------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        texts = [r.params.prompt for r in requests]
        texts += [r.params.negative_prompt or "" for r in requests if r.num_rows == 2]
        embeds_of = {
            text: embeds for text, (embeds,) in zip(texts, self.text_cache(texts), strict=True)
        }
        conditions = image_conditions(self, requests) if self.is_image_to_video else {}
        for request in requests:
            params = request.params
            negative = None
            if request.num_rows == 2:
                negative = embeds_of[params.negative_prompt or ""]
            request.cond = WanCond(embeds_of[params.prompt], negative, conditions.get(id(request)))
            noise = seeded_noise(self._latent_shape(params), params.seed, torch.float32)
            request.latents = noise.to(self.device)
            self.start_sampling(request)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor]:
        embeds, _ = self.pipe.encode_prompt(
            texts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=self.device,
        )
        return (embeds.to(self.experts[0].dtype),)

    def cfg_scale(self, request: Request) -> float | None:
        return guidance_for(request.params, request.batch_key[-1])

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        model = self.experts[rows[0].request.batch_key[-1]]
        requests = [row.request for row in rows]
        embeds = [
            row.request.cond.negative_embeds if row.uncond else row.request.cond.prompt_embeds
            for row in rows
        ]
        # The scheduler's own timesteps (UniPC's are integers), as WanPipeline passes them.
        timestep = torch.stack([r.timesteps[r.step_index].float() for r in requests])
        timestep = timestep.to(self.device)
        if len({(r.latents.shape, e.shape) for r, e in zip(requests, embeds, strict=True)}) > 1:
            hidden = [self._model_input(r).to(model.dtype) for r in requests]
            return padded_forward(model, hidden, timestep, embeds)
        hidden = torch.cat([r.latents for r in requests])
        if self.is_image_to_video:
            condition = torch.cat([r.cond.image_condition for r in requests])
            hidden = torch.cat([hidden, condition], dim=1)
        prediction = model(
            hidden_states=hidden.to(model.dtype),
            timestep=timestep,
            encoder_hidden_states=torch.cat(embeds),
            return_dict=False,
        )[0]
        return list(prediction.split(1))

    def _model_input(self, request: Request) -> torch.Tensor:
        """The transformer's input for one request: image-to-video adds the image condition."""
        if not self.is_image_to_video:
            return request.latents
        return torch.cat([request.latents, request.cond.image_condition], dim=1)

    def denoiser_for(self, rows: list[Row]) -> torch.nn.Module:
        return self.experts[rows[0].request.batch_key[-1]]

    def denoisers(self) -> list[torch.nn.Module]:
        return [expert for expert in self.experts if expert is not None]

    def decode(self, requests: list[Request]) -> list[Any]:
        vae = self.pipe.vae
        latents = torch.cat([r.latents for r in requests]).to(vae.device, vae.dtype)
        mean = self.latents_mean.to(latents.device, latents.dtype)
        inv_std = self.latents_inv_std.to(latents.device, latents.dtype)
        with self.vae_lock:
            video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
        frames = self.pipe.video_processor.postprocess_video(video, output_type="np")
        return [to_uint8(clip) for clip in frames]
