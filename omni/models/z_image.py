"""Z-Image family: ZImageTransformer2DModel (single-stream DiT), a Qwen3 text encoder, FLUX's VAE.

The transformer takes lists: one latent and one unpadded caption per sample, and pads them to a
batch itself with an attention mask. So rows of any prompt length and any image size share one
forward with nothing to pad here, and a row's result does not depend on its neighbours.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import ZImagePipeline
from diffusers.models.transformers.transformer_z_image import SEQ_MULTI_OF
from diffusers.pipelines.z_image.pipeline_z_image import (
    calculate_shift,
    get_default_z_image_sigmas,
)
from torch.nn.utils.rnn import pad_sequence

from omni.limits import MAX_SIDE
from omni.models.base import FamilyAdapter, ModelInfo, Row, ServingDefaults, seeded_noise
from omni.models.padding import MASKED_BACKENDS, masked_backend
from omni.models.text_cache import TextEmbeddingCache
from omni.request import GenerationParams, Request
from omni.samplers import ScheduleInputs

# ZImagePipeline.__call__'s defaults (Z-Image-Turbo's model card runs 9 steps with guidance 0:
# a model directory says so in omni.json).
MAX_SEQUENCE_LENGTH = 512
DEFAULT_SIDE = 1024
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0


@dataclass(slots=True)
class ZImageCond:
    prompt_embeds: torch.Tensor  # [text_len, cap_feat_dim]: the prompt's real tokens only
    negative_embeds: torch.Tensor | None = None


def uses_cfg(params: GenerationParams) -> bool:
    """ZImagePipeline's rule: guidance runs whenever guidance_scale is above 0."""
    return params.guidance_scale > 0


def round_up(length: int) -> int:
    """The transformer pads each image and caption to a multiple of SEQ_MULTI_OF tokens."""
    return -(-length // SEQ_MULTI_OF) * SEQ_MULTI_OF


class ZImageAdapter(FamilyAdapter):
    # ZImageTransformerBlock(x, attn_mask, freqs_cis, adaln_input): all four are per row.
    cache_row_args: ClassVar = frozenset({"x", "attn_mask", "freqs_cis", "adaln_input"})
    kind: ClassVar = "image"
    supported_fields: ClassVar = frozenset(
        {
            "prompt",
            "negative_prompt",
            "width",
            "height",
            "num_inference_steps",
            "guidance_scale",
            "seed",
        }
    )

    def __init__(
        self, name: str, model_dir: Path, device: torch.device, dtype: torch.dtype
    ) -> None:
        super().__init__(name, device, dtype)
        self.pipe = ZImagePipeline.from_pretrained(model_dir, dtype=dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.transformer = self.pipe.transformer
        self.scheduler_config = dict(self.pipe.scheduler.config)
        self.init_samplers(self.scheduler_config)
        self.vae_scale_factor = self.pipe.vae_scale_factor
        self.defaults = ServingDefaults.read(
            model_dir,
            width=DEFAULT_SIDE,
            height=DEFAULT_SIDE,
            num_inference_steps=DEFAULT_STEPS,
            guidance_scale=DEFAULT_GUIDANCE,
        )
        # tokens_per_row runs on the event loop while the stage thread encodes: a fast tokenizer
        # must not be shared between threads, so counting has its own copy.
        self._counter = copy.deepcopy(self.pipe.tokenizer)
        self._counter_lock = threading.Lock()
        self.text_cache = TextEmbeddingCache(self._encode_texts)

    @property
    def info(self) -> ModelInfo:
        patch = self.vae_scale_factor * 2
        # Image rows and columns are rotary positions: the table's length bounds the size.
        rope_side = min(self.transformer.config.axes_lens[1:]) * patch
        return ModelInfo(
            name=self.name,
            kind="image",
            default_width=self.defaults.width,
            default_height=self.defaults.height,
            size_multiple=patch,
            max_side=min(MAX_SIDE, rope_side),
        )

    def resolve(self, params: GenerationParams) -> GenerationParams:
        self.check_fields(params)
        params = self.check_common(params)
        d = self.defaults
        return replace(
            params,
            width=params.width or d.width,
            height=params.height or d.height,
            num_inference_steps=params.num_inference_steps or d.num_inference_steps,
            guidance_scale=d.guidance_scale
            if params.guidance_scale is None
            else params.guidance_scale,
        )

    def plan(self, params: GenerationParams) -> tuple[tuple[Hashable, ...], int]:
        key = ("z_image",)  # one denoiser taking lists: every size and text length shares it
        return (key,) * params.num_inference_steps, 2 if uses_cfg(params) else 1

    def tokens_per_row(self, params: GenerationParams) -> int:
        height, width = self._latent_size(params)
        texts = [params.prompt]
        if uses_cfg(params):
            texts.append(params.negative_prompt or "")
        text_len = max(self._count_tokens(text) for text in texts)
        return round_up((height // 2) * (width // 2)) + round_up(text_len)

    def _count_tokens(self, text: str) -> int:
        """The caption length the pipeline keeps for `text`: its chat-templated token count."""
        with self._counter_lock:
            templated = self._counter.apply_chat_template(
                [{"role": "user", "content": text}],
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=True,
            )
            ids = self._counter(templated, truncation=True, max_length=MAX_SEQUENCE_LENGTH)
        return len(ids.input_ids)

    def _latent_size(self, params: GenerationParams) -> tuple[int, int]:
        """ZImagePipeline.prepare_latents' height and width (the sizes are multiples of 16)."""
        patch = self.vae_scale_factor * 2
        return 2 * (params.height // patch), 2 * (params.width // patch)

    def prepare(self, requests: list[Request]) -> None:
        guided = [r for r in requests if uses_cfg(r.params)]
        texts = [r.params.prompt for r in requests]
        texts += [r.params.negative_prompt or "" for r in guided]  # the pipeline's default: ""
        encoded = [embeds[0, : int(length)] for embeds, length in self.text_cache(texts)]
        num_channels = self.transformer.in_channels
        for embeds, request in zip(encoded, requests, strict=False):
            request.cond = ZImageCond(embeds)
            height, width = self._latent_size(request.params)
            # The pipeline keeps its latents in float32 whatever the model's dtype.
            noise = seeded_noise(
                (1, num_channels, height, width), request.params.seed, torch.float32
            )
            request.latents = noise.to(self.device)
            self.start_sampling(request)
        for embeds, request in zip(encoded[len(requests) :], guided, strict=True):
            request.cond.negative_embeds = embeds

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """ZImagePipeline's: sigmas torch.linspace(1, 1/n, n) and mu from the image token count
        (mu only matters to a scheduler with dynamic shifting; Z-Image-Turbo's has a static 3)."""
        height, width = self._latent_size(params)
        config = self.scheduler_config
        mu = calculate_shift(
            (height // 2) * (width // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = np.array(get_default_z_image_sigmas(params.num_inference_steps), np.float32)
        return ScheduleInputs(sigmas=sigmas, mu=mu)

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption features padded to the longest text of this call, and each text's length.

        The pipeline's own encoder: chat template, padding to 512 tokens, Qwen3's second-to-last
        hidden state, then only the real tokens."""
        captions = self.pipe._encode_prompt(
            list(texts), device=self.device, max_sequence_length=MAX_SEQUENCE_LENGTH
        )
        lengths = torch.tensor([len(caption) for caption in captions])
        return pad_sequence(captions, batch_first=True), lengths

    def cfg_scale(self, request: Request) -> float | None:
        return request.params.guidance_scale if uses_cfg(request.params) else None

    def combine(
        self, requests: list[Request], rows: list[Row], prediction: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """ZImagePipeline's guidance, pos + scale * (pos - neg), for all guided requests at once.

        Rows arrive already negated, and negation commutes exactly with this formula, so the
        result equals the pipeline's negated guided prediction bit for bit."""
        cond: dict[int, torch.Tensor] = {}
        uncond: dict[int, torch.Tensor] = {}
        for row, output in zip(rows, prediction, strict=True):
            (uncond if row.uncond else cond)[id(row.request)] = output
        outputs = [cond[id(r)] for r in requests]
        guided = [i for i, r in enumerate(requests) if id(r) in uncond]
        if guided:
            pos = [outputs[i] for i in guided]
            neg = [uncond[id(requests[i])] for i in guided]
            scales = [self.cfg_scale(requests[i]) for i in guided]
            mixed = torch._foreach_add(
                pos, torch._foreach_mul(torch._foreach_sub(pos, neg), scales)
            )
            for i, output in zip(guided, mixed, strict=True):
                outputs[i] = output
        return outputs

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        """The transformer over every row; returns what the pipeline hands scheduler.step: the
        negated prediction in float32, shaped like the request's latents."""
        dtype = self.transformer.dtype
        latents = [r.request.latents[0].to(dtype).unsqueeze(1) for r in rows]  # [C, 1, H, W]
        captions = [
            r.request.cond.negative_embeds if r.uncond else r.request.cond.prompt_embeds
            for r in rows
        ]
        # The pipeline's t is the scheduler's timestep; the model takes (1000 - t) / 1000.
        t = torch.stack([r.request.timesteps[r.request.step_index].float() for r in rows])
        timestep = ((1000 - t) / 1000).to(self.device)
        shapes = {(x.shape, caption.shape) for x, caption in zip(latents, captions, strict=True)}
        with _masks_allowed(self.transformer, len(shapes) > 1):
            outputs = self.transformer(latents, timestep, captions, return_dict=False)[0]
        return [-output.float().squeeze(1).unsqueeze(0) for output in outputs]

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def decode(self, requests: list[Request]) -> list[Any]:
        vae = self.pipe.vae
        latents = torch.cat([r.latents for r in requests]).to(vae.dtype)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        images = vae.decode(latents, return_dict=False)[0]
        return self.pipe.image_processor.postprocess(images, output_type="pil")


@contextmanager
def _masks_allowed(transformer: torch.nn.Module, mixed: bool) -> Iterator[None]:
    """Rows of different lengths make the transformer pass an attention mask, which flash-attn
    refuses: such forwards run on a backend that takes masks (SDPA), the others as configured."""
    processors = [getattr(m, "processor", None) for m in transformer.modules()]
    processors = [p for p in processors if p is not None and hasattr(p, "_attention_backend")]
    swapped = [
        p
        for p in processors
        if mixed
        and p._attention_backend is not None
        and p._attention_backend not in MASKED_BACKENDS
    ]
    saved = [p._attention_backend for p in swapped]
    try:
        for processor in swapped:
            processor._attention_backend = masked_backend(processor._attention_backend)
        yield
    finally:
        for processor, backend in zip(swapped, saved, strict=True):
            processor._attention_backend = backend
