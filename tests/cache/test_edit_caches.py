"""Step caches on the editing families, whose rows carry reference-image tokens after their
latents (FLUX.1 Kontext, Qwen-Image-Edit): against diffusers' own edit pipelines with the same
cache, and batch invariant beside other edits, other caches and plain generations.

The caches see the whole sequence, reference tokens included, as diffusers' hooks do: the
first block's residual compared, the remaining blocks' residual kept, the attention outputs
expanded. The transformer outputs are compared step by step and row by row (diffusers' over the
latents' part only, which its pipelines keep), and the images too.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers import (
    FluxKontextPipeline,
    FluxTransformer2DModel,
    QwenImageEditPipeline,
    QwenImageEditPlusPipeline,
    QwenImageTransformer2DModel,
)
from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache
from diffusers.hooks.hooks import CacheContext, _set_cache_context
from diffusers.hooks.taylorseer_cache import apply_taylorseer_cache

from omni.cache.taylorseer import predicts
from omni.errors import InvalidRequestError
from omni.models.base import FamilyAdapter
from omni.request import GenerationParams
from tests.cache import test_first_block_cache as fbcache_tests
from tests.cache import test_taylorseer as taylorseer_tests
from tests.cache.test_taylorseer import DIFFUSERS_CONFIG, diffusers_outputs, omni_outputs, report
from tests.conftest import run
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    generate_all,
    image_params,
    running_engine,
)
from tests.engine.test_flux_edit import source_image
from tests.engine.test_flux_kontext import WIDE
from tests.families.qwen_image_edit.helpers import edit_params, edit_pipeline, pipeline_edit
from tests.families.qwen_image_edit.helpers import source_image as qwen_source

STEPS = 8  # TaylorSeer predicts steps 3, 5, 6 and 7 of 8
# First-Block Cache thresholds at which the tiny models skip some steps, not all.
THRESHOLD = {"flux_kontext": 0.35, "qwen_image_edit": 0.35, "qwen_image_edit_plus": 0.35}
PLUS_IMAGES = (qwen_source(), qwen_source(48, 48).transpose(0))  # two reference shapes


@pytest.fixture(scope="module")
def model_dirs(tiny_flux_kontext_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from omni.models.tiny.qwen_image_edit import build_tiny_qwen_image_edit

    root = tmp_path_factory.mktemp("models")
    return {
        "flux_kontext": tiny_flux_kontext_dir,
        "qwen_image_edit": build_tiny_qwen_image_edit(root / "qwen-edit"),
        "qwen_image_edit_plus": build_tiny_qwen_image_edit(root / "qwen-edit-plus", plus=True),
    }


def edit(family: str, kind: str | None = None, **overrides: Any) -> GenerationParams:
    """An edit request of the family, with the cache `kind` at the family's test threshold.
    Qwen-Image-Edit's under true CFG (diffusers' pipeline caches each branch in a context of
    its own; FluxKontextPipeline sets no context, so its edit runs without)."""
    cache: dict[str, Any] = {}
    if kind is not None:
        threshold = THRESHOLD[family] if kind == "fbcache" else None
        cache = {"cache": kind, "cache_threshold": threshold}
    if family == "flux_kontext":
        values = dict(image=source_image(), num_inference_steps=STEPS)
        return image_params(**{**values, **cache, **overrides})
    values = dict(negative_prompt="blurry", true_cfg_scale=3.0, num_inference_steps=STEPS)
    if family == "qwen_image_edit_plus":
        values["image"] = PLUS_IMAGES
    return edit_params(**{**values, **cache, **overrides})


# diffusers' runs -------------------------------------------------------------------------------


def apply_cache(transformer: torch.nn.Module, p: GenerationParams) -> None:
    if p.cache == "fbcache":
        apply_first_block_cache(transformer, FirstBlockCacheConfig(threshold=p.cache_threshold))
    else:
        apply_taylorseer_cache(transformer, DIFFUSERS_CONFIG)  # diffusers' default modules


def diffusers_edit(family: str, model_dir: Path, p: GenerationParams, cached: bool) -> Any:
    """The edit through diffusers' own pipeline, its transformer given the request's cache."""
    if family == "flux_kontext":
        pipe = FluxKontextPipeline.from_pretrained(model_dir)
        if cached:
            apply_cache(pipe.transformer, p)
            # FluxKontextPipeline sets no cache context, which the hooks need: one for the run
            # (one transformer call per step, without true CFG).
            assert p.negative_prompt is None
            _set_cache_context(pipe.transformer, CacheContext("cond"))
        area = p.height * p.width
        return diffusers_image(model_dir, p, pipe, image=p.image, max_area=area)
    pipeline_class = PIPELINES[family]
    pipe = edit_pipeline(model_dir, pipeline_class)
    if cached:
        apply_cache(pipe.transformer, p)
    return pipeline_edit(model_dir, p, pipeline_class, pipe=pipe)


TRANSFORMERS = {
    "flux_kontext": FluxTransformer2DModel,
    "qwen_image_edit": QwenImageTransformer2DModel,
    "qwen_image_edit_plus": QwenImageTransformer2DModel,
}
PIPELINES = {
    "qwen_image_edit": QwenImageEditPipeline,
    "qwen_image_edit_plus": QwenImageEditPlusPipeline,
}


def farthest_on_latents(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> float:
    """Largest difference between omni's rows and diffusers' outputs over the latents' tokens
    (diffusers' also cover the reference tokens, which its pipelines drop)."""
    assert len(ours) == len(theirs)
    return max(
        (a - b[:, : a.shape[1]]).abs().max().item() for a, b in zip(ours, theirs, strict=True)
    )


@pytest.fixture(scope="module")
def uncached(model_dirs) -> Callable[[str, GenerationParams], list[torch.Tensor]]:
    """diffusers' transformer outputs for an edit run without a cache, once per family (the
    edits compared differ in their cache only)."""
    runs: dict[str, list[torch.Tensor]] = {}

    def outputs(family: str, p: GenerationParams) -> list[torch.Tensor]:
        if family not in runs:
            with (
                pytest.MonkeyPatch.context() as patch,
                diffusers_outputs(patch, TRANSFORMERS[family]) as recorded,
            ):
                diffusers_edit(family, model_dirs[family], p, cached=False)
            runs[family] = recorded
        return runs[family]

    return outputs


# Two megapixel reference encodes per run on the CPU: Qwen-Image-Edit-Plus's runs take longer.
PLUS = pytest.mark.slow


@pytest.mark.parametrize(
    ("family", "kind"),
    [
        ("flux_kontext", "fbcache"),
        ("flux_kontext", "taylorseer"),
        ("qwen_image_edit", "fbcache"),
        ("qwen_image_edit", "taylorseer"),
        # Plus differs from Qwen-Image-Edit only in its references' token layout, which is what
        # groups rows for both caches: one cache checks it (each run costs two megapixel
        # reference encodes on the CPU, about 80 s).
        pytest.param("qwen_image_edit_plus", "fbcache", marks=PLUS),
    ],
)
def test_a_cached_edit_equals_diffusers_and_skips_the_same_steps(
    model_dirs, uncached, family, kind, monkeypatch
):
    model_dir = model_dirs[family]
    request = edit(family, kind)
    branches = 2 if request.negative_prompt is not None else 1
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(model_dir, [request])
    p = result.params
    log_class = fbcache_tests.DecisionLog if kind == "fbcache" else taylorseer_tests.DecisionLog
    log = log_class(monkeypatch)
    with diffusers_outputs(monkeypatch, TRANSFORMERS[family]) as expected_outputs:
        expected = diffusers_edit(family, model_dir, p, cached=True)
    uncached_outputs = uncached(family, p)
    if kind == "fbcache":  # one decision per transformer call: cond (then uncond) per step
        skipped = sum(not computed for computed in log.computed[::branches])
    else:
        hooked = len(log.computed) // (branches * STEPS)
        skipped = log.predicted_steps(hooked, calls_per_step=branches, call=0)
        assert skipped == sum(predicts(step) for step in range(STEPS))
    assert result.cache_skipped_steps == skipped
    assert 0 < skipped < STEPS - 1  # the cache really decided something
    for uncond in range(branches):
        off = farthest_on_latents(
            outputs[(p.seed, bool(uncond))], expected_outputs[uncond::branches]
        )
        moved = farthest_on_latents(
            expected_outputs[uncond::branches], uncached_outputs[uncond::branches]
        )
        print(f"{family} {kind} uncond={uncond}: max |omni - diffusers| {off:.2e}; "
              f"the cache moved diffusers' outputs {moved:.2e}")  # fmt: skip
        assert off < 1e-3 * moved
    report(f"{family} {kind} vs diffusers", result.output, expected)
    assert_same_image(result.output, expected)


# Batch invariance --------------------------------------------------------------------------------


def crowd(family: str) -> list[GenerationParams]:
    """A First-Block Cache edit and a TaylorSeer edit (another step count) first, then others
    that share their forwards: an uncached edit (true CFG for Kontext; another reference size for
    Qwen-Image-Edit), an edit under another threshold, an edit of another output size, and plain
    text-to-image requests of the same size, cached and not (both families batch them in the
    same engine steps)."""
    both = [edit(family, "fbcache"), edit(family, "taylorseer", seed=2, num_inference_steps=7)]
    if family == "flux_kontext":
        return [
            *both,
            edit(family, seed=3, negative_prompt="blurry", true_cfg_scale=2.0),
            edit(family, "fbcache", seed=4, cache_threshold=0.1, num_inference_steps=6),
            edit(family, "taylorseer", seed=5, image=WIDE, width=32, height=64),
            image_params(seed=6, num_inference_steps=5, cache="fbcache", cache_threshold=0.3),
            image_params(seed=7, num_inference_steps=9),
        ]
    return [
        *both,
        edit(family, seed=3, image=qwen_source(48, 80), prompt="turn the square into a cat"),
        edit(family, "fbcache", seed=4, cache_threshold=0.1, num_inference_steps=6),
        edit(family, "taylorseer", seed=5, image=None),
        edit(family, "fbcache", seed=6, image=None, num_inference_steps=5, negative_prompt=None),
        edit(family, seed=7, image=None, num_inference_steps=9),
    ]


def forwards_seen(monkeypatch: pytest.MonkeyPatch) -> list[set[int]]:
    """The seeds of the requests whose rows each forward ran."""
    seen: list[set[int]] = []
    original = FamilyAdapter.forward_rows

    def recorded(adapter: FamilyAdapter, rows: list[Any]) -> list[torch.Tensor]:
        seen.append({row.request.params.seed for row in rows})
        return original(adapter, rows)

    monkeypatch.setattr(FamilyAdapter, "forward_rows", recorded)
    return seen


@pytest.mark.parametrize("family", ["flux_kontext", "qwen_image_edit"])
def test_cached_edits_are_the_same_alone_and_in_a_crowd(model_dirs, family, monkeypatch):
    requests = crowd(family)
    outputs = omni_outputs(monkeypatch)
    forwards = forwards_seen(monkeypatch)
    together, _ = generate_all(model_dirs[family], requests)
    # Both cached edits, the uncached edit and the cached plain generation in one forward.
    assert any({0, 2, 3, 6} <= seeds for seeds in forwards)
    firsts = requests[:2]
    in_crowd = {key: outputs.pop(key) for key in list(outputs) if key[0] in (0, 2)}
    alone, alone_stats = generate_all(model_dirs[family], firsts, max_num_running=1)
    assert alone_stats.max_batch_size_seen == 1  # each ran by itself
    for (seed, uncond), rows in in_crowd.items():
        off = max(
            (a - b).abs().max().item() for a, b in zip(rows, outputs[(seed, uncond)], strict=True)
        )
        print(f"{family} seed {seed} uncond={uncond}: max |in a crowd - alone| {off:.2e}")
        assert off < 1e-4
    assert len(in_crowd) == sum(1 + (r.negative_prompt is not None) for r in firsts)
    for ran_together, ran_alone in zip(together[:2], alone, strict=True):
        kind = ran_alone.params.cache
        skipped = ran_alone.cache_skipped_steps
        print(f"{family} {kind}: {skipped} steps skipped alone and in a crowd")
        assert ran_together.cache_skipped_steps == skipped > 0
        report(f"{family} {kind} in a crowd vs alone", ran_together.output, ran_alone.output)
        assert_same_image(ran_together.output, ran_alone.output)
    assert together[2].cache_skipped_steps is None
    assert together[5].cache_skipped_steps > 0  # the plain generation cached beside the edits


def test_fbcache_is_refused_where_the_timestep_embedding_has_two_rows_per_row(model_dirs, tmp_path):
    """Qwen-Image-Edit-2511's transformer (zero_cond_t) modulates the reference tokens with a
    second timestep embedding: First-Block Cache's row slicing does not split that, so it is
    refused with the reason; TaylorSeer (attention outputs, no embedding) is served."""
    model_dir = Path(shutil.copytree(model_dirs["qwen_image_edit"], tmp_path / "zero-cond"))
    config_path = model_dir / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "zero_cond_t": True}))

    async def scenario() -> None:
        async with running_engine(model_dir) as engine:
            engine.resolve(edit("qwen_image_edit", "taylorseer"))
            with pytest.raises(InvalidRequestError, match="zero_cond_t") as caught:
                engine.resolve(edit("qwen_image_edit", "fbcache"))
            assert caught.value.param == "cache"

    run(scenario())
