"""First-Block Cache per request: against diffusers' own, and under step batching."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from diffusers import FluxPipeline, WanPipeline
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks import first_block_cache as diffusers_fbcache

from omni.errors import InvalidRequestError
from omni.limits import DEFAULT_CACHE_THRESHOLDS
from omni.request import GenerationParams
from tests.engine.helpers import assert_same_image, diffusers_image, generate_all, image_params
from tests.models.test_wan_engine import assert_same_video, video_params

STEPS = 28


@pytest.fixture(scope="module")
def tiny_wan_two_layers(tmp_path_factory) -> Any:
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "wan-2-layers", num_layers=2)


class DecisionLog:
    """Records diffusers' FirstBlockCache decisions: True where a call ran the remaining blocks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.computed: list[bool] = []
        original = diffusers_fbcache.FBCHeadBlockHook._should_compute_remaining_blocks

        def recorded(hook: Any, residual: torch.Tensor) -> bool:
            decision = original(hook, residual)
            self.computed.append(decision)
            return decision

        monkeypatch.setattr(
            diffusers_fbcache.FBCHeadBlockHook, "_should_compute_remaining_blocks", recorded
        )

    @property
    def skipped(self) -> int:
        return sum(not computed for computed in self.computed)


def flux_with_fbcache(model_dir, params: GenerationParams) -> Any:
    """diffusers' FluxPipeline with its own First-Block Cache at the request's threshold."""
    pipe = FluxPipeline.from_pretrained(model_dir)
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(params.cache_threshold))
    return diffusers_image(model_dir, params, pipe=pipe)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 2.0])
def test_flux_fbcache_equals_diffusers_and_skips_the_same_steps(
    tiny_flux_dir, monkeypatch, threshold
):
    params = image_params(num_inference_steps=STEPS, cache="fbcache", cache_threshold=threshold)
    log = DecisionLog(monkeypatch)
    expected = flux_with_fbcache(tiny_flux_dir, params)
    (result,), _ = generate_all(tiny_flux_dir, [params])
    assert result.cache_skipped_steps == log.skipped
    assert 0 < log.skipped < STEPS  # the threshold really decided something
    assert_same_image(result.output, expected)


def test_flux_fbcache_with_real_cfg_caches_each_branch_as_diffusers(tiny_flux_dir, monkeypatch):
    params = image_params(
        num_inference_steps=12,
        negative_prompt="blurry",
        true_cfg_scale=4.0,
        cache="fbcache",
        cache_threshold=0.3,
    )
    log = DecisionLog(monkeypatch)  # cond and uncond calls, one after the other per step
    expected = flux_with_fbcache(tiny_flux_dir, params)
    (result,), _ = generate_all(tiny_flux_dir, [params])
    assert result.cache_skipped_steps == sum(not c for c in log.computed[0::2])
    assert_same_image(result.output, expected)


def test_a_cached_request_among_others_skips_the_same_steps_and_makes_the_same_image(
    tiny_flux_dir,
):
    cached = image_params(seed=3, num_inference_steps=STEPS, cache="fbcache", cache_threshold=0.3)
    crowd = [
        cached,
        image_params(seed=4, num_inference_steps=20, cache="fbcache", cache_threshold=0.1),
        image_params(seed=5, num_inference_steps=STEPS, cache="fbcache", cache_threshold=1.0),
        image_params(seed=6, num_inference_steps=10),
        image_params(seed=7, num_inference_steps=STEPS, cache="none"),
        image_params(seed=8, prompt="a blue bird", num_inference_steps=16, cache="fbcache"),
        image_params(
            seed=9,
            num_inference_steps=24,
            negative_prompt="dark",
            true_cfg_scale=3.0,
            cache="fbcache",
            cache_threshold=0.3,
        ),
        image_params(seed=10, width=32, height=64, num_inference_steps=STEPS, cache="fbcache"),
    ]
    together, stats = generate_all(tiny_flux_dir, crowd)
    (alone,), _ = generate_all(tiny_flux_dir, [cached])
    assert stats.max_batch_size_seen >= 7  # the cached and uncached rows shared forwards
    assert together[0].cache_skipped_steps == alone.cache_skipped_steps > 0
    assert stats.max_step_cache_bytes > 0  # what the caches held is counted
    assert_same_image(together[0].output, alone.output)
    assert [r.cache_skipped_steps for r in together][3:5] == [None, None]


def wan_with_fbcache(model_dir, params: GenerationParams) -> Any:
    pipe = WanPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    apply_first_block_cache(pipe.transformer, FirstBlockCacheConfig(params.cache_threshold))
    frames = pipe(
        prompt=params.prompt,
        height=params.height,
        width=params.width,
        num_frames=params.num_frames,
        num_inference_steps=params.num_inference_steps,
        guidance_scale=params.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(params.seed),
    ).frames[0]
    return (frames * 255).round().astype("uint8")


def test_wan_fbcache_equals_diffusers_with_cfg(tiny_wan_two_layers, monkeypatch):
    params = video_params(num_inference_steps=16, cache="fbcache", cache_threshold=0.3)
    (result,), _ = generate_all(tiny_wan_two_layers, [params])
    log = DecisionLog(monkeypatch)
    expected = wan_with_fbcache(tiny_wan_two_layers, result.params)
    assert result.cache_skipped_steps == sum(not c for c in log.computed[0::2]) > 0
    assert_same_video(result.output, expected)


def test_cache_requests_are_checked(flux_adapter):
    assert flux_adapter.resolve(image_params()).cache is None
    resolved = flux_adapter.resolve(image_params(cache="fbcache"))
    assert resolved.cache_threshold == DEFAULT_CACHE_THRESHOLDS["fbcache"]
    refused = [
        {"cache": "teacache"},
        {"cache": "fbcache", "cache_threshold": 0.0},
        {"cache": "fbcache", "cache_threshold": 1e9},
        {"cache": "none", "cache_threshold": 0.1},
    ]
    for bad in refused:
        with pytest.raises(InvalidRequestError) as caught:
            flux_adapter.resolve(image_params(**bad))
        assert caught.value.param == "cache"


@pytest.fixture(scope="module")
def flux_adapter(tiny_flux_dir):
    from omni.models.flux import FluxAdapter

    return FluxAdapter("tiny", tiny_flux_dir, torch.device("cpu"), torch.float32)


def test_the_server_default_applies_to_requests_that_do_not_choose(tiny_flux_dir):
    params = image_params(num_inference_steps=STEPS)
    (default_on,), _ = generate_all(tiny_flux_dir, [params], cache="fbcache", cache_threshold=0.5)
    (chose_none,), _ = generate_all(tiny_flux_dir, [replace(params, cache="none")], cache="fbcache")
    assert default_on.params.cache == "fbcache" and default_on.cache_skipped_steps > 0
    assert chose_none.cache_skipped_steps is None
