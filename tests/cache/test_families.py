"""First-Block Cache on the other families: batch invariant where it runs, refused where not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import QwenImagePipeline
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

from omni.errors import InvalidRequestError
from omni.request import GenerationParams
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine

BUILDERS = {
    "sd3": ("omni.models.tiny.sd3", "build_tiny_sd3"),
    "qwen_image": ("omni.models.tiny.qwen_image", "build_tiny_qwen_image"),
    "z_image": ("omni.models.tiny.z_image", "build_tiny_z_image"),
    "flux2": ("omni.models.tiny.flux2", "build_tiny_flux2_klein"),
}
CFG = {"qwen_image": {"negative_prompt": " ", "true_cfg_scale": 4.0}}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Any]:
    import importlib

    root = tmp_path_factory.mktemp("cache-families")
    built = {}
    for name, (module, builder) in BUILDERS.items():
        built[name] = getattr(importlib.import_module(module), builder)(root / name)
    return built


def params(family: str, **overrides: Any) -> GenerationParams:
    values = dict(prompt="a red fox", num_inference_steps=12, seed=1, **CFG.get(family, {}))
    return GenerationParams(**{**values, **overrides})


@pytest.mark.parametrize("family", ["sd3", "qwen_image", "z_image"])
def test_a_cached_request_skips_the_same_steps_alone_and_in_a_crowd(model_dirs, family):
    cached = params(family, cache="fbcache", cache_threshold=3.0)
    crowd = [
        cached,
        params(family, prompt="a blue bird on a branch in the rain", seed=2,
               num_inference_steps=8, cache="fbcache", cache_threshold=0.2),
        params(family, prompt="x", seed=3),
    ]  # fmt: skip
    (alone,), _ = generate_all(model_dirs[family], [cached])
    together, stats = generate_all(model_dirs[family], crowd)
    assert stats.max_batch_size_seen >= 2  # (prompts of far-apart lengths may take turns)
    assert together[0].cache_skipped_steps == alone.cache_skipped_steps > 0
    assert_same_image(together[0].output, alone.output)


def diffusers_qwen_image(
    model_dir: Any, p: GenerationParams, cache: Callable[[torch.nn.Module], Any] | None = None
) -> Any:
    """Resolved params through QwenImagePipeline, its transformer given `cache` if any."""
    pipe = QwenImagePipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    if cache is not None:
        cache(pipe.transformer)
    return pipe(
        prompt=p.prompt,
        negative_prompt=p.negative_prompt,
        true_cfg_scale=p.true_cfg_scale,
        height=p.height,
        width=p.width,
        num_inference_steps=p.num_inference_steps,
        generator=torch.Generator("cpu").manual_seed(p.seed),
    ).images[0]


def test_qwen_image_fbcache_equals_diffusers(model_dirs):
    request = params("qwen_image", cache="fbcache", cache_threshold=0.5)
    (result,), _ = generate_all(model_dirs["qwen_image"], [request])
    expected = diffusers_qwen_image(
        model_dirs["qwen_image"],
        result.params,
        lambda transformer: apply_first_block_cache(
            transformer, FirstBlockCacheConfig(threshold=0.5)
        ),
    )
    assert result.cache_skipped_steps > 0
    assert_same_image(result.output, expected)
    assert np.asarray(expected).std() > 1  # not a blank image


def test_flux2_refuses_the_cache_clearly(model_dirs):
    async def scenario() -> None:
        async with running_engine(model_dirs["flux2"]) as engine:
            engine.resolve(params("flux2"))  # without a cache it is served
            with pytest.raises(InvalidRequestError, match="not cached yet") as caught:
                engine.resolve(params("flux2", cache="fbcache"))
            assert caught.value.param == "cache"

    run(scenario())
