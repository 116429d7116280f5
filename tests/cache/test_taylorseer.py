"""TaylorSeer per request: against diffusers' own, and under step batching."""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.hooks import taylorseer_cache as diffusers_taylorseer
from diffusers.hooks.taylorseer_cache import TaylorSeerCacheConfig, apply_taylorseer_cache

from omni.cache import rows as rows_module
from omni.cache.taylorseer import CONFIG, predicts
from omni.errors import InvalidRequestError
from omni.models.base import FamilyAdapter
from omni.request import GenerationParams
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    generate_all,
    image_params,
    pixels,
)

STEPS = 28
# diffusers' defaults but for the factors' dtype: omni keeps them in the model's (float32 here).
DIFFUSERS_CONFIG = TaylorSeerCacheConfig(taylor_factors_dtype=torch.float32)


class DecisionLog:
    """Records diffusers' TaylorSeer decisions, per hooked module call: True where it computed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.computed: list[bool] = []
        original = diffusers_taylorseer.TaylorSeerCacheHook._measure_should_compute

        def recorded(hook: Any) -> tuple[bool, Any]:
            decision, state = original(hook)
            self.computed.append(decision)
            return decision, state

        monkeypatch.setattr(
            diffusers_taylorseer.TaylorSeerCacheHook, "_measure_should_compute", recorded
        )

    def predicted_steps(self, modules: int, calls_per_step: int = 1, call: int = 0) -> int:
        """Steps at which the `call`-th transformer call of a step (0: cond) predicted; every
        hooked module must agree within a call."""
        per_call = [
            self.computed[start : start + modules]
            for start in range(0, len(self.computed), modules)
        ]
        assert all(len(set(decisions)) == 1 for decisions in per_call)
        return sum(not decisions[0] for decisions in per_call[call::calls_per_step])


# The tiny FLUX's attention moves its 8-bit images by a level at most (an uncached run differs
# from a TaylorSeer run by 1 in max, 0.02 in mean): images alone cannot tell a right prediction
# from a wrong one. So the transformer's outputs are compared too, step by step and row by row.


@contextmanager
def diffusers_outputs(
    monkeypatch: pytest.MonkeyPatch, model_class: type = FluxTransformer2DModel
) -> Any:
    """The outputs of each `model_class` call in the block, one row per call."""
    outputs: list[torch.Tensor] = []
    original = model_class.forward

    def recorded(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        rows = output[0]  # a batch, or (Z-Image's) a list of rows
        outputs.extend(
            row.detach().clone() for row in (rows if isinstance(rows, list) else rows.split(1))
        )
        return output

    with monkeypatch.context() as patched:
        patched.setattr(model_class, "forward", recorded)
        yield outputs


def omni_outputs(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[int, bool], list[torch.Tensor]]:
    """Each row's outputs through the engine's step caches, by (its request's seed, uncond)."""
    outputs: dict[tuple[int, bool], list[torch.Tensor]] = defaultdict(list)
    original = FamilyAdapter.forward_rows

    def recorded(adapter: FamilyAdapter, rows: list[Any]) -> list[torch.Tensor]:
        result = original(adapter, rows)
        for row, output in zip(rows, result, strict=True):
            outputs[(row.request.params.seed, row.uncond)].append(output.detach().clone())
        return result

    monkeypatch.setattr(FamilyAdapter, "forward_rows", recorded)
    return outputs


def farthest(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def assert_branches_match(
    outputs: dict[tuple[int, bool], list[torch.Tensor]],
    seed: int,
    expected: list[torch.Tensor],
    uncached: list[torch.Tensor],
) -> None:
    """The request's rows (omni's, by branch) against diffusers' cond then uncond calls per
    step: far closer to diffusers' predictions than those are to the uncached outputs."""
    for uncond in (False, True):
        off = farthest(outputs[(seed, uncond)], expected[uncond::2])
        moved = farthest(expected[uncond::2], uncached[uncond::2])
        print(f"uncond={uncond}: max |omni - diffusers| {off:.2e}; predictions moved {moved:.2e}")
        assert off < 1e-3 * moved


def flux_with_taylorseer(model_dir, params: GenerationParams, cached: bool = True) -> Any:
    """diffusers' FluxPipeline, with its own TaylorSeer cache unless `cached` is False."""
    pipe = FluxPipeline.from_pretrained(model_dir)
    if cached:
        apply_taylorseer_cache(pipe.transformer, DIFFUSERS_CONFIG)
    return diffusers_image(model_dir, params, pipe=pipe)


HOOKED = 2  # the tiny FLUX's attention modules: one double-stream, one single-stream block


def report(label: str, actual: Any, expected: Any) -> None:
    diff = np.abs(pixels(actual) - pixels(expected))
    print(f"{label}: max pixel diff {diff.max()}, mean {diff.mean():.4f}")


def test_the_schedule_is_diffusers_defaults() -> None:
    assert (CONFIG.cache_interval, CONFIG.disable_cache_before_step, CONFIG.max_order) == (5, 3, 1)
    full = [step for step in range(STEPS) if not predicts(step)]
    assert full == [0, 1, 2, 4, 9, 14, 19, 24]


def test_flux_taylorseer_equals_diffusers_and_predicts_the_same_steps(tiny_flux_dir, monkeypatch):
    params = image_params(num_inference_steps=STEPS, cache="taylorseer")
    log = DecisionLog(monkeypatch)
    with diffusers_outputs(monkeypatch) as expected_outputs:
        expected = flux_with_taylorseer(tiny_flux_dir, params)
    with diffusers_outputs(monkeypatch) as uncached_outputs:
        flux_with_taylorseer(tiny_flux_dir, params, cached=False)
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(tiny_flux_dir, [params])
    assert result.cache_skipped_steps == log.predicted_steps(HOOKED) == 20
    report("taylorseer vs diffusers", result.output, expected)
    assert_same_image(result.output, expected)
    off, moved = (
        farthest(outputs[(0, False)], expected_outputs),
        farthest(expected_outputs, uncached_outputs),
    )
    print(f"outputs: max |omni - diffusers| {off:.2e}; predictions moved them by {moved:.2e}")
    assert off < 1e-3 * moved


def test_flux_taylorseer_with_real_cfg_predicts_each_branch_as_diffusers(
    tiny_flux_dir, monkeypatch
):
    params = image_params(
        num_inference_steps=16, negative_prompt="blurry", true_cfg_scale=4.0, cache="taylorseer"
    )
    log = DecisionLog(monkeypatch)  # cond then uncond call per step, each with its own count
    with diffusers_outputs(monkeypatch) as expected_outputs:
        expected = flux_with_taylorseer(tiny_flux_dir, params)
    with diffusers_outputs(monkeypatch) as uncached_outputs:
        flux_with_taylorseer(tiny_flux_dir, params, cached=False)
    outputs = omni_outputs(monkeypatch)
    (result,), _ = generate_all(tiny_flux_dir, [params])
    assert_branches_match(outputs, 0, expected_outputs, uncached_outputs)
    cond = log.predicted_steps(HOOKED, calls_per_step=2, call=0)
    assert cond == log.predicted_steps(HOOKED, calls_per_step=2, call=1) == 10
    assert result.cache_skipped_steps == cond
    report("taylorseer + cfg vs diffusers", result.output, expected)
    assert_same_image(result.output, expected)


def test_a_taylorseer_request_among_others_predicts_the_same_steps_and_makes_the_same_image(
    tiny_flux_dir, monkeypatch
):
    seer = image_params(seed=3, num_inference_steps=STEPS, cache="taylorseer")
    crowd = [
        seer,
        image_params(seed=4, num_inference_steps=20, cache="fbcache", cache_threshold=0.3),
        image_params(seed=5, num_inference_steps=12, cache="taylorseer"),
        image_params(seed=6, num_inference_steps=10),
        image_params(seed=7, num_inference_steps=STEPS, cache="none"),
        image_params(
            seed=9,
            num_inference_steps=24,
            negative_prompt="dark",
            true_cfg_scale=3.0,
            cache="taylorseer",
        ),
    ]
    outputs = omni_outputs(monkeypatch)
    together, stats = generate_all(tiny_flux_dir, crowd)
    in_crowd = outputs.pop((3, False))
    (alone,), _ = generate_all(tiny_flux_dir, [seer])
    off = farthest(in_crowd, outputs[(3, False)])
    print(f"outputs: max |in a crowd - alone| {off:.2e}")
    assert off < 1e-4
    assert stats.max_batch_size_seen >= 6  # cached, predicted and uncached rows shared forwards
    assert together[0].cache_skipped_steps == alone.cache_skipped_steps == 20
    report("taylorseer in a crowd vs alone", together[0].output, alone.output)
    assert_same_image(together[0].output, alone.output)
    assert [r.cache_skipped_steps for r in together][2:5] == [
        sum(predicts(s) for s in range(12)),
        None,
        None,
    ]
    assert together[1].cache_skipped_steps > 0  # fbcache still skipped beside TaylorSeer


@pytest.fixture(scope="module")
def flux_adapter(tiny_flux_dir):
    from omni.models.flux import FluxAdapter

    return FluxAdapter("tiny", tiny_flux_dir, torch.device("cpu"), torch.float32)


def test_taylorseer_requests_are_checked(flux_adapter):
    resolved = flux_adapter.resolve(image_params(cache="taylorseer"))
    assert (resolved.cache, resolved.cache_threshold) == ("taylorseer", None)
    for bad in [{"cache": "taylorseer", "cache_threshold": 0.1}, {"cache": "taylor"}]:
        with pytest.raises(InvalidRequestError) as caught:
            flux_adapter.resolve(image_params(**bad))
        assert caught.value.param == "cache"


def test_taylorseer_rows_out_of_phase_predict_and_compute_in_one_forward(
    tiny_flux_dir, monkeypatch
):
    """Three run at a time, so the last request starts steps after the others: in its forwards
    some TaylorSeer rows predict while others refresh, and it still makes what it makes alone."""
    late = image_params(seed=13, num_inference_steps=STEPS, cache="taylorseer")
    crowd = [
        image_params(seed=11, num_inference_steps=6, cache="taylorseer"),
        image_params(seed=12, num_inference_steps=STEPS, cache="taylorseer"),
        image_params(seed=14, num_inference_steps=STEPS, cache="fbcache", cache_threshold=0.3),
        late,
    ]
    mixed: list[bool] = []

    class Recorded(rows_module.RowTaylorSeer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seers = [i for i, row in enumerate(self.rows) if row is not None]
            mixed.append(len({self.predicting[i] for i in seers}) == 2)

    monkeypatch.setattr(rows_module, "RowTaylorSeer", Recorded)
    outputs = omni_outputs(monkeypatch)
    together, _ = generate_all(tiny_flux_dir, crowd, max_num_running=3)
    in_crowd = outputs.pop((13, False))
    assert any(mixed)
    (alone,), _ = generate_all(tiny_flux_dir, [late])
    off = farthest(in_crowd, outputs[(13, False)])
    print(f"outputs out of phase: max |in a crowd - alone| {off:.2e}")
    assert off < 1e-4
    assert together[3].cache_skipped_steps == alone.cache_skipped_steps == 20
    assert_same_image(together[3].output, alone.output)
