"""One WanTransformer3DModel forward over rows of different video shapes, padded to one length.

WanTransformer3DModel.forward patch-embeds one [B, C, F, H, W] tensor, so rows of different
shapes cannot go through it; this runs its pieces instead: each row is patch-embedded and gets
the rotary table of its own (frames, height, width) grid, the token sequences are padded to the
longest, the blocks run once over the batch with padded keys masked out, and each row's output is
un-patchified by its own grid. Timestep modulation stays per row, as in the model's own forward.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

from omni.models.padding import key_mask, masked_backend, pad_rows, processors_replaced, unpad


def padded_forward(
    model: WanTransformer3DModel,
    hidden: list[torch.Tensor],
    timestep: torch.Tensor,
    text: list[torch.Tensor],
) -> list[torch.Tensor]:
    """Predictions for rows hidden[b] ([1, C, F_b, H_b, W_b]) with text[b] ([1, L_b, D]) at
    timestep[b]; each prediction is shaped like hidden[b] with the model's output channels."""
    patch = model.config.patch_size
    grids = [[size // step for size, step in zip(x.shape[2:], patch, strict=True)] for x in hidden]
    tokens = [model.patch_embedding(x).flatten(2).transpose(1, 2) for x in hidden]
    tables = [model.rope(x) for x in hidden]  # ([1, S_b, 1, head_dim],) * 2
    hidden_states, valid = pad_rows(tokens)
    rotary = (pad_rows([cos for cos, _ in tables])[0], pad_rows([sin for _, sin in tables])[0])
    encoder_states, text_valid = pad_rows(text)
    temb, timestep_proj, encoder_states, _ = model.condition_embedder(
        timestep, encoder_states, None
    )
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    with processors_replaced(_masked_processors(model, valid, text_valid, hidden_states.dtype)):
        for block in model.blocks:
            hidden_states = block(hidden_states, encoder_states, timestep_proj, rotary)
    shift, scale = (model.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    hidden_states = model.norm_out(hidden_states.float()) * (1 + scale) + shift
    hidden_states = model.proj_out(hidden_states.type_as(tokens[0]))
    rows = unpad(hidden_states, [x.shape[1] for x in tokens])
    return [_unpatchify(row, grid, patch) for row, grid in zip(rows, grids, strict=True)]


def _masked_processors(
    model: WanTransformer3DModel,
    valid: torch.Tensor,
    text_valid: torch.Tensor,
    dtype: torch.dtype,
) -> dict[WanAttention, _MaskedWanAttnProcessor]:
    """Self-attention masks padded video keys; cross-attention masks padded text keys only when
    some row's text is shorter (prompts padded to one length leave nothing to mask)."""
    video_mask = key_mask(valid, dtype)
    text_mask = None if text_valid.all() else key_mask(text_valid, dtype)
    processors: dict[WanAttention, _MaskedWanAttnProcessor] = {}
    for block in model.blocks:
        processors[block.attn1] = _MaskedWanAttnProcessor(block.attn1.processor, video_mask)
        if text_mask is not None:
            processors[block.attn2] = _MaskedWanAttnProcessor(block.attn2.processor, text_mask)
    return processors


class _MaskedWanAttnProcessor(WanAttnProcessor):
    """WanAttnProcessor with a fixed key mask, which the blocks have no argument to pass."""

    def __init__(self, replaced: WanAttnProcessor, mask: torch.Tensor) -> None:
        super().__init__()
        self._attention_backend = masked_backend(getattr(replaced, "_attention_backend", None))
        self.mask = mask

    def __call__(
        self,
        attn: WanAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return super().__call__(attn, hidden_states, encoder_hidden_states, self.mask, rotary_emb)


def _unpatchify(tokens: torch.Tensor, grid: list[int], patch: tuple[int, ...]) -> torch.Tensor:
    """[1, F*H*W, p_t*p_h*p_w*C] patches -> [1, C, F*p_t, H*p_h, W*p_w], as the model's forward."""
    frames, height, width = grid
    p_t, p_h, p_w = patch
    tokens = tokens.reshape(1, frames, height, width, p_t, p_h, p_w, -1)
    return tokens.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
