"""Requests with different samplers in one engine: they share forwards, each gets its own solver."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxPipeline

from omni.errors import InvalidRequestError
from omni.models.flux import FluxAdapter
from omni.request import GenerationParams
from tests.engine.helpers import assert_same_image, diffusers_image, generate_all, image_params
from tests.families.samplers import use_sampler


def flux_with(model_dir, params: GenerationParams):
    """FluxPipeline with its scheduler swapped for the request's sampler's diffusers class."""
    pipe = use_sampler(FluxPipeline.from_pretrained(model_dir), params.sampler)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompt=params.prompt,
        height=params.height,
        width=params.width,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
        max_sequence_length=pipe.tokenizer_2.model_max_length,
    ).images[0]


def test_samplers_share_forwards_and_each_request_matches_its_own_run(tiny_flux_dir):
    mixed = [
        image_params(seed=1, num_inference_steps=6),
        image_params(seed=2, prompt="a blue bird on a branch", sampler="unipc"),
        image_params(seed=3, prompt="a city at night", sampler="dpm++2m", num_inference_steps=5),
        image_params(seed=4, sampler="unipc", num_inference_steps=3),
    ]
    results, stats = generate_all(tiny_flux_dir, mixed)
    assert stats.max_batch_size_seen == len(mixed)  # every sampler in one forward
    assert [r.params.sampler for r in results] == ["euler", "unipc", "dpm++2m", "unipc"]
    assert_same_image(results[0].output, diffusers_image(tiny_flux_dir, mixed[0]))
    for result, params in zip(results[1:], mixed[1:], strict=True):
        assert_same_image(result.output, flux_with(tiny_flux_dir, params))
    # The solvers differ: the same request under another sampler is another image.
    with pytest.raises(AssertionError):
        assert_same_image(results[1].output, diffusers_image(tiny_flux_dir, mixed[1]))


@pytest.fixture(scope="module")
def flux(tiny_flux_dir) -> FluxAdapter:
    return FluxAdapter("tiny", tiny_flux_dir, torch.device("cpu"), torch.float32)


def test_a_request_that_names_no_sampler_keeps_the_models_own(flux):
    params = flux.resolve(image_params(sampler=None))
    assert params.sampler == flux.default_sampler == "euler"


def test_an_unknown_sampler_is_refused_naming_the_field(flux):
    with pytest.raises(InvalidRequestError, match="unknown sampler 'ddim'") as caught:
        flux.resolve(image_params(sampler="ddim"))
    assert caught.value.param == "sampler"
