"""Rows of different sizes share one transformer forward and predict what they would alone."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
from PIL import Image

import omni.models.flux as flux_module
import omni.models.wan_varlen as wan_varlen
from omni.flow import cfg_combine, model_timesteps
from omni.models.base import FamilyAdapter, Row
from omni.models.flux import FluxAdapter
from omni.models.rotary import RotaryTables
from omni.request import GenerationParams, Request

CPU = torch.device("cpu")
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
PROMPTS = ["a red fox runs through the snow", "a lighthouse at dusk", "a bowl of ramen"]
FLUX_SIZES = [
    {"height": 32, "width": 32},
    {"height": 64, "width": 48, "negative_prompt": "blurry", "true_cfg_scale": 4.0},
    {"height": 96, "width": 96},
]
# (48, 32, 5) and (32, 48, 5) have as many tokens as each other: only their rotary positions differ.
WAN_SIZES = [
    {"height": 32, "width": 32, "num_frames": 9, "guidance_scale": 4.0},
    {"height": 48, "width": 32, "num_frames": 5},
    {"height": 32, "width": 48, "num_frames": 5},
    {"height": 16, "width": 64, "num_frames": 1},
    {"height": 16, "width": 16, "num_frames": 13, "guidance_scale": 3.0},
]


def prepared(
    adapter: FamilyAdapter, sizes: list[dict[str, Any]], first: int = 0, **common: Any
) -> list[Request]:
    """Prepared requests of these sizes; request i has prompt and seed number first + i."""
    requests = []
    for index, size in enumerate(sizes, start=first):
        params = GenerationParams(
            prompt=PROMPTS[index % len(PROMPTS)], seed=index, **{**common, **size}
        )
        params = adapter.resolve(params)
        requests.append(Request(f"r{index}", params, *adapter.plan(params)))
    with torch.inference_mode():
        adapter.prepare(requests)
    return requests


def forward(adapter: FamilyAdapter, rows: list[Row]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return adapter.forward(rows)


def assert_rows_as_alone(adapter: FamilyAdapter, requests: list[Request]) -> None:
    rows = adapter.rows(requests)
    assert len({row.request.latents.shape for row in rows}) > 1
    mixed = forward(adapter, rows)
    assert len(mixed) == len(rows)
    for row, prediction in zip(rows, mixed, strict=True):
        (alone,) = forward(adapter, [row])
        assert prediction.shape == row.request.latents.shape
        torch.testing.assert_close(prediction, alone, **TOLERANCE)


def largest_error(adapter: FamilyAdapter, rows: list[Row], expected: list[torch.Tensor]) -> float:
    mixed = forward(adapter, rows)
    return max((a - b).abs().max().item() for a, b in zip(mixed, expected, strict=True))


def unmasked(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(valid.shape[0], 1, 1, valid.shape[1], dtype=dtype)


def test_flux_rows_of_different_sizes_predict_as_alone(flux):
    requests = prepared(flux, FLUX_SIZES)
    assert requests[1].num_rows == 2
    assert_rows_as_alone(flux, requests)


def test_flux_tolerance_catches_a_missing_mask_or_wrong_positions(flux, monkeypatch):
    rows = flux.rows(prepared(flux, FLUX_SIZES))
    alone = [forward(flux, [row])[0] for row in rows]
    assert largest_error(flux, rows, alone) < 1e-4
    with monkeypatch.context() as patch:
        patch.setattr(flux_module, "key_mask", unmasked)
        assert largest_error(flux, rows, alone) > 1e-2
    largest = max(rows, key=lambda row: row.request.latents.shape[1]).request.params
    image_ids = flux._image_ids_for
    with monkeypatch.context() as patch:  # every row takes the first positions of the largest
        patch.setattr(flux, "_image_ids_for", lambda p: image_ids(largest)[: flux_tokens(flux, p)])
        patch.setattr(flux, "rotary", RotaryTables(flux.pipe.transformer.pos_embed))  # not cached
        assert largest_error(flux, rows, alone) > 1e-2


def flux_tokens(adapter: FluxAdapter, params: GenerationParams) -> int:
    height, width = adapter._latent_size(params)
    return (height // 2) * (width // 2)


def test_flux_rows_with_different_text_lengths_predict_as_alone(flux):
    requests = prepared(flux, FLUX_SIZES)
    cond = requests[0].cond
    cond.prompt_embeds = cond.prompt_embeds[:, :-9]
    assert_rows_as_alone(flux, requests)


def test_wan_rows_of_different_sizes_and_frame_counts_predict_as_alone(t2v):
    requests = prepared(t2v, WAN_SIZES)
    assert [r.num_rows for r in requests] == [2, 1, 1, 1, 2]
    assert_rows_as_alone(t2v, requests)


def test_wan_tolerance_catches_a_missing_mask_or_wrong_positions(t2v, monkeypatch):
    rows = t2v.rows(prepared(t2v, WAN_SIZES))
    alone = [forward(t2v, [row])[0] for row in rows]
    assert largest_error(t2v, rows, alone) < 1e-4
    with monkeypatch.context() as patch:
        patch.setattr(wan_varlen, "key_mask", unmasked)
        assert largest_error(t2v, rows, alone) > 1e-2
    rope = WanRotaryPosEmbed.forward
    with monkeypatch.context() as patch:  # a transposed grid: the right length, wrong positions
        patch.setattr(WanRotaryPosEmbed, "forward", lambda self, x: rope(self, x.transpose(3, 4)))
        assert largest_error(t2v, rows, alone) > 1e-2


def test_wan_rows_with_different_text_lengths_predict_as_alone(t2v):
    requests = prepared(t2v, WAN_SIZES[:3])
    cond = requests[1].cond
    cond.prompt_embeds = cond.prompt_embeds[:, :-100]
    assert_rows_as_alone(t2v, requests)


@pytest.mark.parametrize("expert", [0, 1])
def test_wan_two_experts_rows_of_different_sizes_predict_as_alone(t2v_two_experts, expert):
    requests = prepared(t2v_two_experts, WAN_SIZES, num_inference_steps=8, guidance_scale_2=2.0)
    for request in requests:
        request.step_index = [key[-1] for key in request.step_keys].index(expert)
        assert request.batch_key[-1] == expert
    assert_rows_as_alone(t2v_two_experts, requests)


def test_wan_image_to_video_rows_of_different_sizes_predict_as_alone(i2v):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    requests = prepared(i2v, WAN_SIZES, image=Image.fromarray(pixels))
    shapes = {r.cond.image_condition.shape for r in requests}
    assert len(shapes) == len(WAN_SIZES)
    assert_rows_as_alone(i2v, requests)


def test_same_size_rows_are_bit_identical_to_one_diffusers_call(flux, t2v):
    requests = prepared(flux, [FLUX_SIZES[1]] * 3)
    rows = flux.rows(requests)
    cond = [(r.request.cond, r.uncond) for r in rows]
    with torch.inference_mode():
        expected = flux.pipe.transformer(
            hidden_states=torch.cat([r.request.latents for r in rows]),
            timestep=model_timesteps(
                torch.stack([r.request.sigmas[0] for r in rows]), torch.float32
            ),
            guidance=torch.tensor([r.request.params.guidance_scale for r in rows]),
            pooled_projections=torch.cat([c.negative_pooled if u else c.pooled for c, u in cond]),
            encoder_hidden_states=torch.cat(
                [c.negative_embeds if u else c.prompt_embeds for c, u in cond]
            ),
            txt_ids=torch.zeros(cond[0][0].prompt_embeds.shape[1], 3),
            img_ids=flux._image_ids_for(requests[0].params),
            return_dict=False,
        )[0]
    assert torch.equal(torch.cat(forward(flux, rows)), expected)

    requests = prepared(t2v, [WAN_SIZES[0]] * 3)
    rows = t2v.rows(requests)
    embeds = [
        r.request.cond.negative_embeds if r.uncond else r.request.cond.prompt_embeds for r in rows
    ]
    with torch.inference_mode():
        expected = t2v.experts[0](
            hidden_states=torch.cat([r.request.latents for r in rows]),
            timestep=torch.stack([r.request.timesteps[0].float() for r in rows]),
            encoder_hidden_states=torch.cat(embeds),
            return_dict=False,
        )[0]
    assert torch.equal(torch.cat(forward(t2v, rows)), expected)


def denoise(adapter: FamilyAdapter, requests: list[Request]) -> None:
    """Every step of the requests, all in one forward per step, with CFG and each request's
    own sampler stepping it alone."""
    while requests[0].step_index < requests[0].num_steps:
        rows = adapter.rows(requests)
        predictions = {
            (id(row.request), row.uncond): p
            for row, p in zip(rows, forward(adapter, rows), strict=True)
        }
        for request in requests:
            velocity = predictions[id(request), False]
            scale = adapter.cfg_scale(request)
            if scale is not None:
                velocity = cfg_combine(velocity, predictions[id(request), True], scale)
            request.sampler.step([request], [velocity])
            request.step_index += 1


@pytest.mark.parametrize(
    ("adapter", "sizes"),
    [("flux", FLUX_SIZES[:2]), ("t2v", WAN_SIZES[:1] + WAN_SIZES[3:4])],
)
def test_denoising_together_ends_where_denoising_alone_does(request, adapter, sizes):
    adapter = request.getfixturevalue(adapter)
    together = prepared(adapter, sizes, num_inference_steps=4)
    denoise(adapter, together)
    for index, mixed in enumerate(together):
        (alone,) = prepared(adapter, [sizes[index]], first=index, num_inference_steps=4)
        assert alone.params == mixed.params
        denoise(adapter, [alone])
        torch.testing.assert_close(mixed.latents, alone.latents, **TOLERANCE)
