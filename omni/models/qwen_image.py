"""Qwen-Image family: QwenImageTransformer2DModel over packed 2x2 latent patches, with the
Qwen2.5-VL text encoder's variable-length prompt embeddings.

Rows of one forward share a latent size (it is in the batch key: the text RoPE of
QwenImageTransformer2DModel starts after the image's largest side, so the size moves every text
position) but mix text lengths: embeddings are zero-padded to the longest row and
`encoder_hidden_states_mask` keeps every row from attending to padding. Real text positions are
unchanged by padding at the end, so each row sees exactly what it sees alone.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from diffusers import QwenImagePipeline
from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0
from tokenizers import Tokenizer

from omni.errors import InvalidRequestError
from omni.flow import cfg_combine_all, config_shift, linear_sigmas
from omni.limits import MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.padding import masked_backend, pad_rows, processors_replaced
from omni.models.text_cache import TextEmbeddingCache
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

# QwenImagePipeline.__call__'s defaults.
MAX_SEQUENCE_LENGTH = 512
DEFAULT_STEPS = 50
DEFAULT_TRUE_CFG_SCALE = 4.0


@dataclass(slots=True)
class QwenImageCond:
    prompt_embeds: torch.Tensor  # [1, text_len, joint_attention_dim]: the prompt's own tokens
    negative_embeds: torch.Tensor | None = None


def uses_true_cfg(params: GenerationParams) -> bool:
    """QwenImagePipeline's rule: real CFG needs a negative prompt (even " ") and
    true_cfg_scale above 1; without a negative prompt the default scale of 4 does nothing."""
    return params.negative_prompt is not None and (params.true_cfg_scale or 1.0) > 1.0


class QwenImageAdapter(FamilyAdapter):
    # Rows of different text lengths carry their own key masks into every block.
    cache_row_args: ClassVar = FamilyAdapter.cache_row_args | {"encoder_hidden_states_mask"}
    kind: ClassVar = "image"
    supported_fields: ClassVar = frozenset(
        {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_inference_steps",
            "guidance_scale",
            "true_cfg_scale",
            "seed",
        }
    )

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = QwenImagePipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.init_samplers(self.scheduler_config)
        self.vae_scale_factor = self.pipe.vae_scale_factor
        self.has_guidance_embeds = bool(self.pipe.transformer.config.guidance_embeds)
        default_side = self.pipe.default_sample_size * self.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir, width=default_side, height=default_side, num_inference_steps=DEFAULT_STEPS
        )
        # A tokenizer of its own for counting tokens on the scheduler's side: the pipeline's is
        # reconfigured (padding, truncation) on every call from the encoding thread.
        self.counter = Tokenizer.from_str(self.pipe.tokenizer.backend_tokenizer.to_str())
        self.counter.no_padding()
        self.counter.no_truncation()
        self.text_cache = TextEmbeddingCache(self._encode_texts)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=self.vae_scale_factor * 2,
            max_side=MAX_SIDE,
        )

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        guidance = d.guidance_scale if params.guidance_scale is None else params.guidance_scale
        if self.has_guidance_embeds and guidance is None:
            raise InvalidRequestError(
                f"guidance_scale is required by {self.name} (a guidance-distilled model)",
                param="guidance_scale",
            )
        true_cfg = params.true_cfg_scale
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=guidance,
            true_cfg_scale=DEFAULT_TRUE_CFG_SCALE if true_cfg is None else true_cfg,
        )

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        key = ("qwen_image", *self._latent_size(params))
        return (key,) * params.num_inference_steps, 2 if uses_true_cfg(params) else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        texts = [params.prompt] + ([params.negative_prompt] if uses_true_cfg(params) else [])
        return (height // 2) * (width // 2) + max(self._text_length(t) for t in texts)

    def _text_length(self, text: str) -> int:
        """The embedding length the pipeline keeps for a text: its templated tokens less the
        dropped template prefix, at most max_sequence_length."""
        pipe = self.pipe
        tokens = len(self.counter.encode(pipe.prompt_template_encode.format(text)).ids)
        kept = min(tokens, pipe.tokenizer_max_length + pipe.prompt_template_encode_start_idx)
        return min(kept - pipe.prompt_template_encode_start_idx, MAX_SEQUENCE_LENGTH)

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        return params.height // self.vae_scale_factor, params.width // self.vae_scale_factor

    def prepare(self, requests: list[Request]) -> None:
        num_channels = self.pipe.transformer.config.in_channels // 4
        for request in requests:
            params = request.params
            (embeds,) = self.text_cache([params.prompt])[0]
            request.cond = QwenImageCond(embeds)
            if uses_true_cfg(params):
                (request.cond.negative_embeds,) = self.text_cache([params.negative_prompt])[0]
            height, width = self._latent_size(params)
            noise = seeded_noise((1, num_channels, height, width), params.seed, embeds.dtype)
            request.latents = QwenImagePipeline._pack_latents(
                noise, 1, num_channels, height, width
            ).to(self.device)
            self.start_sampling(request)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor]:
        """One text's embeddings, encoded alone as the pipeline encodes a single prompt: no
        padding in the text encoder, so the result never depends on other prompts."""
        (text,) = texts  # `prepare` asks the cache for one text at a time
        embeds, _ = self.pipe.encode_prompt(
            prompt=[text], device=self.device, max_sequence_length=MAX_SEQUENCE_LENGTH
        )
        return (embeds,)

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """QwenImagePipeline's: sigmas linspace(1, 1/n, n), mu from the image token count."""
        height, width = self._latent_size(params)
        mu = config_shift(self.scheduler_config, (height // 2) * (width // 2))
        return ScheduleInputs(sigmas=linear_sigmas(params.num_inference_steps), mu=mu)

    def cfg_scale(self, request: Request) -> float | None:
        return request.params.true_cfg_scale if uses_true_cfg(request.params) else None

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        embeds = [
            r.request.cond.negative_embeds if r.uncond else r.request.cond.prompt_embeds
            for r in rows
        ]
        latents = torch.cat([r.request.latents for r in rows])
        timesteps = torch.stack([r.request.timesteps[r.request.step_index] for r in rows])
        guidance = None
        if self.has_guidance_embeds:
            scales = [r.request.params.guidance_scale for r in rows]
            guidance = torch.tensor(scales, dtype=torch.float32, device=self.device)
        text, valid = pad_rows(embeds)
        mixed_lengths = not bool(valid.all())
        height, width = self._latent_size(rows[0].request.params)
        inputs = dict(
            hidden_states=latents,
            # The pipeline hands t in the latents' dtype, divided by 1000.
            timestep=timesteps.to(self.device, latents.dtype) / 1000,
            guidance=guidance,
            # No mask when no row is padded, as encode_prompt drops an all-ones one.
            encoder_hidden_states_mask=valid if mixed_lengths else None,
            encoder_hidden_states=text,
            img_shapes=[[(1, height // 2, width // 2)]] * len(rows),
            return_dict=False,
        )
        with processors_replaced(self._masked_processors() if mixed_lengths else {}):
            prediction = self.pipe.transformer(**inputs)[0]
        return list(prediction.split(1))

    def _masked_processors(self) -> dict[torch.nn.Module, Any]:
        """Qwen's own attention processor on a dispatcher backend that takes a mask (flash-attn
        does not), for forwards whose rows carry padded text."""
        processors = {}
        for block in self.pipe.transformer.transformer_blocks:
            backend = getattr(block.attn.processor, "_attention_backend", None)
            processor = QwenDoubleStreamAttnProcessor2_0()
            processor._attention_backend = masked_backend(backend)
            processors[block.attn] = processor
        return processors

    def combine(
        self, requests: list[Request], rows: list[Row], prediction: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """The pipeline's true CFG: uncond + s * (cond - uncond), then rescaled so every token's
        channel vector keeps the conditional prediction's norm."""
        cond: dict[int, torch.Tensor] = {}
        uncond: dict[int, torch.Tensor] = {}
        for row, output in zip(rows, prediction, strict=True):
            (uncond if row.uncond else cond)[id(row.request)] = output
        velocities = [cond[id(r)] for r in requests]
        guided = [i for i, r in enumerate(requests) if id(r) in uncond]
        if not guided:
            return velocities
        conds = [velocities[i] for i in guided]
        mixed = cfg_combine_all(
            conds,
            [uncond[id(requests[i])] for i in guided],
            [self.cfg_scale(requests[i]) for i in guided],
        )
        for i, velocity in zip(guided, rescale_to_norms(mixed, conds), strict=True):
            velocities[i] = velocity
        return velocities

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.pipe.transformer]

    def decode(self, requests: list[Request]) -> list[Any]:
        params = requests[0].params
        latents = torch.cat([r.latents for r in requests])
        latents = QwenImagePipeline._unpack_latents(
            latents, params.height, params.width, self.vae_scale_factor
        )
        vae = self.pipe.vae
        latents = latents.to(vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
        inverse_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(
            latents.device, latents.dtype
        )
        latents = latents / inverse_std + mean
        images = vae.decode(latents, return_dict=False)[0][:, :, 0]
        return self.pipe.image_processor.postprocess(images, output_type="pil")


def rescale_to_norms(mixed: list[torch.Tensor], conds: list[torch.Tensor]) -> list[torch.Tensor]:
    """mixed[i] * (|conds[i]| / |mixed[i]|), norms over the last (channel) dim, as
    QwenImagePipeline does after CFG. Requests of one latent size are stacked so each size
    costs a few batched operations."""
    out: list[torch.Tensor | None] = [None] * len(mixed)
    by_shape: dict[torch.Size, list[int]] = {}
    for index, tensor in enumerate(mixed):
        by_shape.setdefault(tensor.shape, []).append(index)
    for indices in by_shape.values():
        combined = torch.stack([mixed[i] for i in indices])
        cond_norm = torch.norm(torch.stack([conds[i] for i in indices]), dim=-1, keepdim=True)
        noise_norm = torch.norm(combined, dim=-1, keepdim=True)
        for i, scaled in zip(indices, combined * (cond_norm / noise_norm), strict=True):
            out[i] = scaled
    return out  # type: ignore[return-value]


__all__ = ["QwenImageAdapter", "QwenImageCond", "rescale_to_norms", "uses_true_cfg"]
