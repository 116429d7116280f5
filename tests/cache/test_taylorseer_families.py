"""TaylorSeer on the families beyond FLUX: against diffusers' own and batch invariant (the edit
families': tests/cache/test_edit_caches.py)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import QwenImageTransformer2DModel, WanPipeline, ZImageTransformer2DModel
from diffusers import WanTransformer3DModel as WanTransformer
from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache
from diffusers.models.attention_processor import Attention

from omni.cache.taylorseer import predicts
from omni.request import GenerationParams
from tests.cache.test_families import diffusers_qwen_image
from tests.cache.test_taylorseer import (
    DIFFUSERS_CONFIG,
    DecisionLog,
    assert_branches_match,
    diffusers_outputs,
    farthest,
    omni_outputs,
    report,
)
from tests.engine.helpers import assert_same_image, generate_all
from tests.families.z_image.helpers import diffusers_z_image
from tests.models.test_wan_engine import diffusers_video, video_params

BUILDERS = {
    "sd3": ("omni.models.tiny.sd3", "build_tiny_sd3"),
    "qwen_image": ("omni.models.tiny.qwen_image", "build_tiny_qwen_image"),
    "z_image": ("omni.models.tiny.z_image", "build_tiny_z_image"),
    "flux2": ("omni.models.tiny.flux2", "build_tiny_flux2_klein"),
    "ltx": ("omni.models.tiny.ltx", "build_tiny_ltx"),
}
CFG = {"qwen_image": {"negative_prompt": " ", "true_cfg_scale": 4.0}}
VIDEO = {"ltx": {"num_frames": 9, "width": 32, "height": 32, "guidance_scale": 3.0}}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_wan_dir, tiny_wan22_dir) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("taylorseer-families")
    built = {"wan21": tiny_wan_dir, "wan22": tiny_wan22_dir}
    for name, (module, builder) in BUILDERS.items():
        built[name] = getattr(importlib.import_module(module), builder)(root / name)
    return built


def params(family: str, **overrides: Any) -> GenerationParams:
    if family.startswith("wan"):  # Wan2.2: 6 steps for each expert
        boundary = {"boundary_ratio": 0.8} if family == "wan22" else {}
        return video_params(**{**boundary, "num_inference_steps": 12, **overrides})
    values = dict(prompt="a red fox", num_inference_steps=12, seed=1)
    return GenerationParams(
        **{**values, **CFG.get(family, {}), **VIDEO.get(family, {}), **overrides}
    )


def attention_config(
    transformer: torch.nn.Module, attention_class: type, blocks: str
) -> TaylorSeerCacheConfig:
    """The FLUX test's config, hooking every `attention_class` module of the transformer's main
    blocks (the ModuleList `blocks`) by name."""
    names = [
        re.escape(name)
        for name, module in transformer.named_modules()
        if isinstance(module, attention_class) and name.startswith(f"{blocks}.")
    ]
    assert names
    return TaylorSeerCacheConfig(
        taylor_factors_dtype=DIFFUSERS_CONFIG.taylor_factors_dtype, cache_identifiers=names
    )


def cached_wan(model_dir) -> tuple[WanPipeline, int]:
    """WanPipeline with TaylorSeer on both experts, as one enables it on each transformer; and
    the modules it hooks in each."""
    from diffusers.models.transformers.transformer_wan import WanAttention

    pipe = WanPipeline.from_pretrained(model_dir)
    for transformer in filter(None, (pipe.transformer, pipe.transformer_2)):
        # diffusers' default patterns (`...attn`) find none of Wan's `attn1` and `attn2`.
        config = attention_config(transformer, WanAttention, "blocks")
        apply_taylorseer_cache(transformer, config)
    return pipe, len(config.cache_identifiers)


@pytest.mark.parametrize("family", ["wan21", "wan22"])
def test_wan_taylorseer_equals_diffusers_on_each_expert(model_dirs, family, monkeypatch):
    """Wan2.2's experts each keep their own expansion: the low-noise expert warms up afresh
    after the switch, as diffusers' hooks on `transformer_2` do, and predicts the same steps."""
    request = params(family, cache="taylorseer")
    log = DecisionLog(monkeypatch)
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(model_dirs[family], [request])
    resolved = result.params  # its boundary splits its 12 steps between the experts
    pipe, hooked = cached_wan(model_dirs[family])
    with diffusers_outputs(monkeypatch, WanTransformer) as expected_outputs:
        expected = diffusers_video(model_dirs[family], resolved, pipe=pipe)
    with diffusers_outputs(monkeypatch, WanTransformer) as uncached_outputs:
        diffusers_video(model_dirs[family], resolved)
    assert_branches_match(outputs, resolved.seed, expected_outputs, uncached_outputs)
    predicted = log.predicted_steps(hooked, calls_per_step=2, call=0)
    assert predicted == log.predicted_steps(hooked, calls_per_step=2, call=1)
    # Each expert's schedule counts from its own first step (one count over all 12 steps, as
    # one shared state would keep, predicts more).
    steps = resolved.num_inference_steps
    pipe.scheduler.set_timesteps(steps)
    boundary = (resolved.boundary_ratio or 0) * pipe.scheduler.config.num_train_timesteps
    high = int((pipe.scheduler.timesteps >= boundary).sum())
    per_expert = [sum(predicts(s) for s in range(n)) for n in (high, steps - high)]
    assert predicted == sum(per_expert) > 0
    if family == "wan22":
        assert min(per_expert) > 0 and predicted < sum(predicts(s) for s in range(steps))
    assert result.cache_skipped_steps == predicted
    report(f"{family} taylorseer vs diffusers", result.output, expected)
    assert_same_image(result.output, expected)


def test_qwen_image_taylorseer_equals_diffusers(model_dirs, monkeypatch):
    request = params("qwen_image", cache="taylorseer", num_inference_steps=16)
    log = DecisionLog(monkeypatch)
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(model_dirs["qwen_image"], [request])
    p = result.params

    def seer(transformer: torch.nn.Module) -> None:
        apply_taylorseer_cache(transformer, DIFFUSERS_CONFIG)  # diffusers' default patterns

    with diffusers_outputs(monkeypatch, QwenImageTransformer2DModel) as expected_outputs:
        expected = diffusers_qwen_image(model_dirs["qwen_image"], p, seer)
    hooked = len(log.computed) // (2 * p.num_inference_steps)
    with diffusers_outputs(monkeypatch, QwenImageTransformer2DModel) as uncached_outputs:
        diffusers_qwen_image(model_dirs["qwen_image"], p)
    assert_branches_match(outputs, p.seed, expected_outputs, uncached_outputs)
    predicted = log.predicted_steps(hooked, calls_per_step=2, call=0)
    assert result.cache_skipped_steps == predicted == sum(predicts(s) for s in range(16)) > 0
    report("qwen-image taylorseer vs diffusers", result.output, expected)
    assert_same_image(result.output, expected)
    assert np.asarray(expected).std() > 1  # not a blank image


def test_z_image_taylorseer_on_its_attention_modules_equals_diffusers(model_dirs, monkeypatch):
    """Z-Image's main layers' attention, named as diffusers' `cache_identifiers`: diffusers'
    default patterns hook nothing in it."""
    request = params("z_image", cache="taylorseer")
    log = DecisionLog(monkeypatch)
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(model_dirs["z_image"], [request])
    p = result.params
    assert p.guidance_scale == 0  # the tiny model's default: no CFG, one call per step

    def seer(transformer: torch.nn.Module) -> None:
        apply_taylorseer_cache(transformer, attention_config(transformer, Attention, "layers"))

    with diffusers_outputs(monkeypatch, ZImageTransformer2DModel) as expected_outputs:
        expected = diffusers_z_image(model_dirs["z_image"], p, seer)
    hooked = len(log.computed) // p.num_inference_steps
    with diffusers_outputs(monkeypatch, ZImageTransformer2DModel) as uncached_outputs:
        diffusers_z_image(model_dirs["z_image"], p)
    # omni's rows are the pipeline's negated predictions, shaped like the latents.
    ours = [-row.flatten() for row in outputs[(p.seed, False)]]
    off = farthest(ours, [row.float().flatten() for row in expected_outputs])
    moved = farthest(expected_outputs, uncached_outputs)
    print(f"z-image: max |omni - diffusers| {off:.2e}; predictions moved {moved:.2e}")
    assert off < 1e-3 * moved
    predicted = log.predicted_steps(hooked)
    assert result.cache_skipped_steps == predicted == sum(predicts(s) for s in range(12)) > 0
    assert_same_image(result.output, expected)


def crowd(family: str) -> list[GenerationParams]:
    """A TaylorSeer request first, then others beside it: another TaylorSeer request with a
    longer prompt (padded text, where a family pads), First-Block Cache where the family takes
    it, one uncached, each of another step count."""
    fbcache = family not in ("flux2", "ltx", "wan22")  # (the tiny LTX and Wan: one block)
    return [
        params(family, cache="taylorseer"),
        params(family, prompt="a blue bird on a branch in the rain at dusk", seed=2,
               num_inference_steps=7, cache="taylorseer"),
        params(family, prompt="x", seed=3, num_inference_steps=8,
               **({"cache": "fbcache", "cache_threshold": 0.3} if fbcache else {})),
        params(family, seed=4, num_inference_steps=10),
    ]  # fmt: skip


@pytest.mark.parametrize("family", ["sd3", "qwen_image", "z_image", "flux2", "ltx", "wan22"])
def test_a_taylorseer_request_predicts_the_same_alone_and_in_a_crowd(
    model_dirs, family, monkeypatch
):
    requests = crowd(family)
    outputs = omni_outputs(monkeypatch)
    together, stats = generate_all(model_dirs[family], requests)
    in_crowd = outputs.pop((requests[0].seed, False))
    (alone,), _ = generate_all(model_dirs[family], requests[:1])
    off = farthest(in_crowd, outputs[(requests[0].seed, False)])
    print(f"{family}: max |in a crowd - alone| {off:.2e}")
    assert off < 1e-4
    assert stats.max_batch_size_seen >= 2
    assert together[0].cache_skipped_steps == alone.cache_skipped_steps > 0
    assert_same_image(together[0].output, alone.output)
    assert together[3].cache_skipped_steps is None
