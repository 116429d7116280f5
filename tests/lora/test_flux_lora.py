"""Per-request LoRA on the tiny FLUX model: the same pixels as diffusers' load_lora_weights, and
different adapters (and none) sharing one forward, each as if it ran alone."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from diffusers import FluxPipeline

from omni.lora.spec import LoraSpec
from tests.conftest import run
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    image_params,
    pixels,
    running_engine,
)
from tests.lora.helpers import make_lora


@pytest.fixture(scope="module")
def lora_dir(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loras")
    make_lora(FluxPipeline, tiny_flux_dir, root / "a", seed=1)
    make_lora(FluxPipeline, tiny_flux_dir, root / "b", seed=2, rank=2, alpha=2.0)
    return root


def adapter(name: str, scale: float = 1.0) -> LoraSpec:
    return LoraSpec(name=name, local_path=f"{name}/pytorch_lora_weights.safetensors", scale=scale)


def reference(model_dir: Path, lora_dir: Path, params, adapters: dict[str, float]):
    """diffusers' FluxPipeline with load_lora_weights and set_adapters(names, weights)."""
    pipe = FluxPipeline.from_pretrained(model_dir)
    for name in adapters:
        pipe.load_lora_weights(lora_dir / name, adapter_name=name)
    pipe.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
    return diffusers_image(model_dir, params, pipe=pipe)


def generate(model_dir: Path, lora_dir: Path, batches: list[list], **config):
    """Each batch submitted together to one engine, in turn: (Finished per batch, step records)."""

    async def scenario():
        async with running_engine(model_dir, lora_dir=str(lora_dir), **config) as engine:
            outputs = []
            for batch in batches:
                outputs.append(await engine.generate_many(batch))
            return outputs, list(engine._engine.step_records)

    return run(scenario(), timeout=300)


def test_a_lora_image_equals_diffusers_load_lora_weights_and_scale_0_equals_none(
    tiny_flux_dir: Path, lora_dir: Path
) -> None:
    params = image_params(seed=3)
    with_lora = replace(params, lora=(adapter("a", 0.7),))
    zero = replace(params, lora=(adapter("a", 0.0),))
    outputs, _ = generate(tiny_flux_dir, lora_dir, [[with_lora], [params], [zero]])
    (ours,), (plain,), (zeroed,) = ([f.output for f in batch] for batch in outputs)

    assert_same_image(ours, reference(tiny_flux_dir, lora_dir, params, {"a": 0.7}))
    assert_same_image(zeroed, plain)
    # The adapter moves the picture far past the tolerance: the comparison can fail.
    assert np.abs(pixels(ours) - pixels(plain)).mean() > 1  # the mean tolerance is 0.05


def test_stacked_adapters_equal_diffusers_with_both_set_on_both_cfg_branches(
    tiny_flux_dir: Path, lora_dir: Path
) -> None:
    params = image_params(seed=4, negative_prompt="blurry", true_cfg_scale=2.0)
    stacked = replace(params, lora=(adapter("a", 0.6), adapter("b", -0.4)))
    ((finished,),), _ = generate(tiny_flux_dir, lora_dir, [[stacked]])
    ours = finished.output

    assert_same_image(ours, reference(tiny_flux_dir, lora_dir, params, {"a": 0.6, "b": -0.4}))


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"sizes": [(64, 64), (48, 64), (64, 32)]},  # the padded mixed-resolution forward
        {"caches": ["fbcache", "taylorseer", None]},  # rows of step caches stay rows
    ],
    ids=["same-size", "mixed-sizes", "step-caches"],
)
def test_two_adapters_and_none_share_each_forward_and_match_their_solo_runs(
    tiny_flux_dir: Path, lora_dir: Path, variant: dict
) -> None:
    sizes = variant.get("sizes", [(64, 64)] * 3)
    caches = variant.get("caches", [None] * 3)
    loras = [(adapter("a", 0.8),), (adapter("b", 1.2),), None]
    requests = [
        image_params(seed=10 + i, width=w, height=h, lora=lora, cache=cache)
        for i, ((w, h), lora, cache) in enumerate(zip(sizes, loras, caches, strict=True))
    ]
    if "caches" in variant:
        requests[0] = replace(requests[0], cache_threshold=0.5)  # some steps skip
    outputs, records = generate(
        tiny_flux_dir, lora_dir, [requests] + [[r] for r in requests], max_batch_size=8
    )

    together, solos = outputs[0], [batch[0] for batch in outputs[1:]]
    assert max(record.num_requests for record in records) == 3  # all three in one forward
    for mixed, alone in zip(together, solos, strict=True):
        assert_same_image(mixed.output, alone.output)
    if "caches" in variant:  # the caches did skip work for some rows
        assert together[0].cache_skipped_steps > 0 and together[1].cache_skipped_steps > 0
