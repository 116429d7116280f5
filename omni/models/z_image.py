"""Z-Image family: ZImageTransformer2DModel (single-stream DiT), a Qwen3 text encoder, FLUX's VAE.

The transformer takes lists: one latent and one unpadded caption per sample, and pads them to a
batch itself with an attention mask. So rows of any prompt length and any image size share one
forward with nothing to pad here, and a row's result does not depend on its neighbours.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager

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
from omni.models.base import Row
from omni.models.image_family import ImageAdapter, TextCond
from omni.models.padding import MASKED_BACKENDS, masked_backend
from omni.models.text_cache import Embedding
from omni.request import GenerationParams
from omni.samplers import ScheduleInputs

# ZImagePipeline.__call__'s defaults (Z-Image-Turbo's model card runs 9 steps with guidance 0:
# a model directory says so in omni.json).
MAX_SEQUENCE_LENGTH = 512
DEFAULT_SIDE = 1024
DEFAULT_STEPS = 50
DEFAULT_GUIDANCE = 5.0


ZImageCond = TextCond  # [text_len, cap_feat_dim]: the prompt's real tokens only


def round_up(length: int) -> int:
    """The transformer pads each image and caption to a multiple of SEQ_MULTI_OF tokens."""
    return -(-length // SEQ_MULTI_OF) * SEQ_MULTI_OF


class ZImageAdapter(ImageAdapter):
    # ZImageTransformerBlock(x, attn_mask, freqs_cis, adaln_input): all four are per row.
    cache_row_args = frozenset({"x", "attn_mask", "freqs_cis", "adaln_input"})
    # The main layers' attention (diffusers' default patterns find none in Z-Image's names),
    # called with the joined sequence, its mask and its rotary table, all per row.
    taylorseer_modules = (r"^layers\.\d+\.attention",)
    taylorseer_row_args = frozenset({"hidden_states", "attention_mask", "freqs_cis"})
    pipeline_class = ZImagePipeline
    family = "z_image"  # one denoiser taking lists: every size and text length shares it
    default_side = DEFAULT_SIDE
    default_steps = DEFAULT_STEPS
    default_guidance = DEFAULT_GUIDANCE

    def _setup(self) -> None:
        self.transformer = self.pipe.transformer
        # tokens_per_row runs on the event loop while the stage thread encodes: a fast tokenizer
        # must not be shared between threads, so counting has its own copy.
        self._counter = copy.deepcopy(self.pipe.tokenizer)
        self._counter_lock = threading.Lock()

    @property
    def max_side(self) -> int:
        """Image rows and columns are rotary positions: the table's length bounds the size."""
        rope_side = min(self.transformer.config.axes_lens[1:]) * self.vae_scale_factor * 2
        return min(MAX_SIDE, rope_side)

    def uses_cfg(self, params: GenerationParams) -> bool:
        """ZImagePipeline's rule: guidance runs whenever guidance_scale is above 0."""
        return params.guidance_scale > 0

    def tokens_per_row(self, params: GenerationParams) -> int:
        return round_up(self._image_tokens(params)) + self._text_tokens(params)

    def _text_tokens(self, params: GenerationParams) -> int:
        return round_up(max(self._count_tokens(text) for text in self._row_texts(params)))

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

    def row_shape(self, row: Row) -> tuple:
        """A cached row's sequence is its image and its caption, each padded to 32 tokens by the
        transformer, and then to the longest in the forward: rows of one caption length only,
        so that length (and the cached residuals' shape) stays the row's own."""
        caption = row.request.cond.embeds(row.uncond).shape[-2]  # [tokens, width]
        return (*super().row_shape(row), round_up(caption))

    def _text_cond(self, embedding: Embedding) -> TextCond:
        """Only the caption's real tokens: the transformer takes unpadded captions."""
        embeds, length = embedding
        return TextCond(embeds[0, : int(length)])

    def _noise_channels(self) -> int:
        return self.transformer.in_channels

    def _noise_dtype(self, cond: TextCond) -> torch.dtype:
        """The pipeline keeps its latents in float32 whatever the model's dtype."""
        return torch.float32

    def schedule_inputs(self, params: GenerationParams) -> ScheduleInputs:
        """ZImagePipeline's: sigmas torch.linspace(1, 1/n, n) and mu from the image token count
        (mu only matters to a scheduler with dynamic shifting; Z-Image-Turbo's has a static 3)."""
        config = self.scheduler_config
        mu = calculate_shift(
            self._image_tokens(params),
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

    def guide(
        self, cond: list[torch.Tensor], uncond: list[torch.Tensor], scales: list[float]
    ) -> list[torch.Tensor]:
        """ZImagePipeline's guidance, pos + scale * (pos - neg), for all guided requests at once.

        Rows arrive already negated, and negation commutes exactly with this formula, so the
        result equals the pipeline's negated guided prediction bit for bit."""
        guided = torch._foreach_mul(torch._foreach_sub(cond, uncond), scales)
        return torch._foreach_add(cond, guided)

    def forward(self, rows: list[Row]) -> list[torch.Tensor]:
        """The transformer over every row; returns what the pipeline hands scheduler.step: the
        negated prediction in float32, shaped like the request's latents."""
        dtype = self.transformer.dtype
        latents = [r.request.latents[0].to(dtype).unsqueeze(1) for r in rows]  # [C, 1, H, W]
        captions = [row.request.cond.embeds(row.uncond) for row in rows]
        # The pipeline's t is the scheduler's timestep; the model takes (1000 - t) / 1000.
        t = self._timesteps(rows).float()
        timestep = ((1000 - t) / 1000).to(self.device)
        shapes = {(x.shape, caption.shape) for x, caption in zip(latents, captions, strict=True)}
        with _masks_allowed(self.transformer, len(shapes) > 1):
            outputs = self.transformer(latents, timestep, captions, return_dict=False)[0]
        return [-output.float().squeeze(1).unsqueeze(0) for output in outputs]

    def denoisers(self) -> list[torch.nn.Module]:
        return [self.transformer]

    def _unpack(self, latents: torch.Tensor, params: GenerationParams) -> torch.Tensor:
        return latents.to(self.pipe.vae.dtype)


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
