"""LTX-Video family (LTXPipeline): text-to-video with one LTXVideoTransformer3DModel.

Latents. The VAE compresses 32x in space and 8x in time (the first frame alone, then 8 frames a
latent frame), so sides are multiples of 32 and frame counts 8k+1; a request's `num_frames`
rounds like Wan's 4k+1 rule (160 -> 161, 159 -> 153) and its sides to the nearest multiple.
Noise is drawn in the 5-D latent shape and packed into tokens, as LTXPipeline.prepare_latents
does, so a seed gives the pipeline's noise.

Schedule. As LTXPipeline: custom sigmas linspace(1, 1/n, n) and `mu` from the scheduler
config's line at the video token count (frames x height x width of the latents).

Positions. LTX rotates by coordinates scaled by (8 / frame rate, 32, 32): the frame rate is a
model input. Rows of one forward share a latent shape (it is in the batch key) but not their
fps, so every row gets its own coordinates through the transformer's `video_coords`, computed
with the same float operations as the transformer's own grid (bit-identical).

Text. T5 at LTXPipeline's fixed 128 tokens, padded to that length with an attention mask, so
every row's text has the same length and the rows' masks simply stack.

Guidance. Classifier-free when guidance_scale > 1, negative prompt "" by default, combined as
uncond + s * (cond - uncond); LTXPipeline's guidance_rescale defaults to 0 (off), as here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import LTXPipeline

from omni.errors import InvalidRequestError
from omni.flow import config_shift, linear_sigmas
from omni.limits import MAX_FPS, MAX_GUIDANCE, MAX_NUM_FRAMES, MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.text_cache import TextEmbeddingCache
from omni.models.wan_rules import check_range, first, nearest_multiple, to_uint8, valid_num_frames
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

MAX_SEQUENCE_LENGTH = 128  # LTXPipeline.__call__'s max_sequence_length
DECODE_TIMESTEP = 0.0  # LTXPipeline.__call__'s decode_timestep (and so its decode_noise_scale)


@dataclass(slots=True)
class LTXCond:
    prompt_embeds: torch.Tensor  # [1, 128, caption_channels], T5 output at every position
    prompt_mask: torch.Tensor  # [1, 128] bool: the prompt's real tokens
    negative_embeds: torch.Tensor | None = None  # set when the request runs CFG
    negative_mask: torch.Tensor | None = None

    def text(self, *, uncond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings, mask) of a conditional or unconditional row."""
        if uncond:
            return self.negative_embeds, self.negative_mask
        return self.prompt_embeds, self.prompt_mask


class LTXAdapter(FamilyAdapter):
    kind: ClassVar = "video"
    # Self- and cross-attention of every block (diffusers' default patterns find none in LTX's
    # names): rotary tables (from per-row video coordinates) and text masks are per row.
    taylorseer_modules: ClassVar = (r"^transformer_blocks\.\d+\.attn[12]",)
    taylorseer_row_args: ClassVar = frozenset(
        {"hidden_states", "encoder_hidden_states", "attention_mask", "image_rotary_emb"}
    )
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
            "seed",
        }
    )

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = LTXPipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        pipe = self.pipe
        if (pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size) != (1, 1):
            # LTXPipeline hands the transformer the unpatched latent sizes, so only 1x1x1 works.
            raise NotImplementedError("LTX transformers with patches larger than 1 are not served")
        self.scheduler_config = dict(pipe.scheduler.config)
        self.init_samplers(self.scheduler_config)
        self.spatial = pipe.vae_spatial_compression_ratio
        self.temporal = pipe.vae_temporal_compression_ratio
        self.num_channels = pipe.transformer.config.in_channels
        self.defaults = ServingDefaults.read(
            model_dir,
            width=704,
            height=512,
            num_inference_steps=50,
            guidance_scale=3.0,
            num_frames=161,
            fps=25,
        )
        self.text_cache = TextEmbeddingCache(self._encode_texts)
        self._coords: dict[tuple[int, int, int, int], torch.Tensor] = {}

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="video",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.spatial,
            max_side=MAX_SIDE,
            default_fps=self.defaults.fps,
            default_num_frames=self.defaults.num_frames,
            default_frame_interpolation_model=self.defaults.frame_interpolation_model,
        )

    # Requests --------------------------------------------------------------------------------

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = replace(
            params,
            width=nearest_multiple(params.width, self.spatial),
            height=nearest_multiple(params.height, self.spatial),
        )
        params = self.check_common(params)
        d = self.defaults
        num_steps = params.num_inference_steps or d.num_inference_steps
        self._check_steps(num_steps)
        num_frames = first(params.num_frames, d.num_frames)
        fps = first(params.fps, d.fps)
        guidance = first(params.guidance_scale, d.guidance_scale)
        check_range("num_frames", num_frames, 1, MAX_NUM_FRAMES)
        check_range("fps", fps, 1, MAX_FPS)
        check_range("guidance_scale", guidance, 0, MAX_GUIDANCE)
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=num_steps,
            num_frames=min(valid_num_frames(num_frames, self.temporal), MAX_NUM_FRAMES),
            fps=fps,
            guidance_scale=guidance,
        )

    def _check_steps(self, num_steps: int) -> None:
        """One step cannot be stretched to LTX's shift_terminal: the scheduler divides 0 by 0
        and LTXPipeline makes a NaN video. Refused instead."""
        if num_steps == 1 and self.scheduler_config.get("shift_terminal"):
            raise InvalidRequestError(
                f"num_inference_steps must be at least 2 for {self.name}: its schedule ends at "
                "shift_terminal, which a single step cannot reach",
                param="num_inference_steps",
            )

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        # Rows of one forward share their latent shape: no token padding, one rope grid size.
        key = ("ltx", *self._latent_size(params))
        return (key,) * params.num_inference_steps, 2 if params.guidance_scale > 1.0 else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        """Video tokens; the 128 text tokens enter by cross-attention only."""
        frames, height, width = self._latent_size(params)
        return frames * height * width

    def _latent_size(self, params: GenerationParams) -> tuple[int, int, int]:
        """(frames, height, width) of the latents, as LTXPipeline.prepare_latents computes them."""
        frames = (params.num_frames - 1) // self.temporal + 1
        return frames, params.height // self.spatial, params.width // self.spatial

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """LTXPipeline's: sigmas linspace(1, 1/n, n), mu from the latent video's token count."""
        mu = config_shift(self.scheduler_config, self.tokens_per_row(params))
        return ScheduleInputs(sigmas=linear_sigmas(params.num_inference_steps), mu=mu)

    # Tensors ---------------------------------------------------------------------------------

    def prepare(self, requests: list[Request]) -> None:
        guided = [r for r in requests if r.num_rows == 2]
        texts = [r.params.prompt for r in requests]
        texts += [r.params.negative_prompt or "" for r in guided]
        encoded = self.text_cache(texts)
        for request, (embeds, mask) in zip(requests, encoded, strict=False):
            request.cond = LTXCond(embeds, mask)
            frames, height, width = self._latent_size(request.params)
            shape = (1, self.num_channels, frames, height, width)
            noise = seeded_noise(shape, request.params.seed, torch.float32)
            request.latents = LTXPipeline._pack_latents(noise).to(self.device)
            self.start_sampling(request)
        for request, (embeds, mask) in zip(guided, encoded[len(requests) :], strict=True):
            request.cond.negative_embeds = embeds
            request.cond.negative_mask = mask

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, mask, _, _ = self.pipe.encode_prompt(
            texts,
            do_classifier_free_guidance=False,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=self.device,
        )
        return embeds, mask

    def cfg_scale(self, request: Request) -> float | None:
        scale = request.params.guidance_scale
        return scale if scale > 1.0 else None

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        transformer = self.pipe.transformer
        requests = [row.request for row in rows]
        texts = [row.request.cond.text(uncond=row.uncond) for row in rows]
        embeds, masks = [t[0] for t in texts], [t[1] for t in texts]
        embeds_dtype = embeds[0].dtype
        # LTXPipeline hands the transformer its scheduler's float32 `t` and the latents in the
        # text embeddings' dtype; the prediction comes back as float32.
        timestep = torch.stack([r.timesteps[r.step_index] for r in requests]).to(self.device)
        prediction = transformer(
            hidden_states=torch.cat([r.latents for r in requests]).to(embeds_dtype),
            encoder_hidden_states=torch.cat(embeds),
            timestep=timestep,
            encoder_attention_mask=torch.cat(masks),
            video_coords=torch.cat([self._video_coords(r.params) for r in requests]),
            return_dict=False,
        )[0]
        return list(prediction.float().split(1))

    def _video_coords(self, params: GenerationParams) -> torch.Tensor:
        """[1, 3, tokens] rope coordinates of a latent video at its frame rate.

        LTXVideoRotaryPosEmbed scales its grid by rope_interpolation_scale = (temporal / fps,
        spatial, spatial) times the patch size, then divides by its base sizes; given
        `video_coords` it does only the division, so the product is taken here, in the same
        order, and the result is bit for bit the grid the pipeline's call makes.
        """
        frames, height, width = self._latent_size(params)
        key = (frames, height, width, params.fps)
        if key not in self._coords:
            axes = [torch.arange(n, dtype=torch.float32, device=self.device) for n in key[:3]]
            grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # [3, F, H, W]
            rope = self.pipe.transformer.rope
            scales = (self.temporal / params.fps, self.spatial, self.spatial)
            patches = (rope.patch_size_t, rope.patch_size, rope.patch_size)
            grid = torch.stack(
                [axis * s * p for axis, s, p in zip(grid, scales, patches, strict=True)]
            )
            self._coords[key] = grid.flatten(1)[None]
        return self._coords[key]

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer]

    def decode(self, requests: list[Request]) -> list[Any]:
        pipe, vae = self.pipe, self.pipe.vae
        frames, height, width = self._latent_size(requests[0].params)
        latents = torch.cat([r.latents for r in requests])
        latents = LTXPipeline._unpack_latents(latents, frames, height, width)
        latents = LTXPipeline._denormalize_latents(
            latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        ).to(requests[0].cond.prompt_embeds.dtype)
        timestep = None
        if vae.config.timestep_conditioning:
            # The pipeline mixes in noise at decode_noise_scale = decode_timestep = 0: a no-op.
            timestep = torch.full((len(requests),), DECODE_TIMESTEP, device=latents.device)
            timestep = timestep.to(latents.dtype)
        video = vae.decode(latents.to(vae.dtype), timestep, return_dict=False)[0]
        clips = pipe.video_processor.postprocess_video(video, output_type="np")
        return [to_uint8(clip) for clip in clips]
