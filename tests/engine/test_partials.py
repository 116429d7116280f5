"""Partial images: when a request gets them, and that each is the decode of its clean-latents
prediction at that step, as diffusers' own FluxPipeline computes the step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import FluxPipeline

from omni.engine import Finished, Preview
from omni.engine.partials import preview_steps
from omni.request import GenerationParams
from tests.conftest import run
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    image_params,
    running_engine,
)


@pytest.mark.parametrize("num_steps", range(1, 41))
@pytest.mark.parametrize("count", range(4))
def test_previews_are_evenly_spaced_strictly_inside_the_run(num_steps: int, count: int) -> None:
    steps = sorted(preview_steps(num_steps, count))

    assert len(steps) == min(count, num_steps - 1)
    assert all(0 < step < num_steps for step in steps)
    if len(steps) == count and count:  # gaps (with both ends) differ by at most one step
        gaps = [b - a for a, b in zip([0, *steps], [*steps, num_steps], strict=False)]
        assert max(gaps) - min(gaps) <= 1, gaps


def stream_events(model_dir: Path, params: GenerationParams, **config: Any) -> list[Any]:
    async def scenario() -> list[Any]:
        async with running_engine(model_dir, **config) as engine:
            return [event async for event in engine.stream(params)]

    return run(scenario())


def diffusers_preview(model_dir: Path, params: GenerationParams, steps_done: int) -> Any:
    """FluxPipeline run as is, its transformer's input latents and output recorded at each
    step; the preview is its VAE decode of x0 = x - sigma * v at the step ending at steps_done."""
    pipe = FluxPipeline.from_pretrained(model_dir)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
        seen.append((kwargs["hidden_states"], output[0]))

    pipe.transformer.register_forward_hook(record, with_kwargs=True)
    diffusers_image(model_dir, params, pipe)
    step = steps_done - 1
    latents, velocity = seen[step]
    x0 = latents - pipe.scheduler.sigmas[step] * velocity
    x0 = pipe._unpack_latents(x0, params.height, params.width, pipe.vae_scale_factor)
    x0 = x0 / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    with torch.no_grad():
        image = pipe.vae.decode(x0, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


@pytest.mark.parametrize("overlap_stages", [True, False])
def test_a_preview_decodes_the_clean_prediction_diffusers_makes_at_that_step(
    tiny_flux_dir: Path, overlap_stages: bool
) -> None:
    params = image_params(num_inference_steps=6, partial_images=2)

    events = stream_events(tiny_flux_dir, params, overlap_stages=overlap_stages)

    previews = [e for e in events if isinstance(e, Preview)]
    assert isinstance(events[-1], Finished)
    assert [p.steps_done for p in previews] == sorted(preview_steps(6, 2))
    for preview in previews:
        expected = diffusers_preview(tiny_flux_dir, params, preview.steps_done)
        assert_same_image(preview.output, expected)
    alone = stream_events(tiny_flux_dir, image_params(num_inference_steps=6))
    assert_same_image(events[-1].output, alone[-1].output)  # previews leave the result alone
