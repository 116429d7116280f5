from __future__ import annotations

import asyncio
import time
from contextlib import aclosing

import pytest

from omni.engine import EngineState, Finished, Progress
from omni.errors import EngineNotReadyError, InvalidRequestError, RequestFailedError
from tests.conftest import run
from tests.engine.helpers import (
    assert_same_image,
    diffusers_image,
    generate_all,
    image_params,
    running_engine,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"width": 32, "height": 64, "num_inference_steps": 3, "guidance_scale": 5.0, "seed": 11},
        {"negative_prompt": "blurry", "true_cfg_scale": 4.0, "seed": 3},
    ],
    ids=["default", "wide-3-steps", "true-cfg"],
)
def test_image_is_the_same_as_diffusers_pipeline(tiny_flux_dir, overrides):
    params = image_params(**overrides)
    expected = diffusers_image(tiny_flux_dir, params)
    (result,), _ = generate_all(tiny_flux_dir, [params])
    assert result.output.size == expected.size
    assert_same_image(result.output, expected)


def test_output_depends_only_on_own_seed_and_params_not_on_batch(tiny_flux_dir):
    target = image_params(seed=1234, num_inference_steps=6)

    async def alone_then_crowded():
        async with running_engine(tiny_flux_dir) as engine:
            alone = await engine.generate(target)
            others = [
                image_params(prompt=f"other prompt {i}", seed=i, num_inference_steps=3 + i)
                for i in range(7)
            ]
            crowd = [asyncio.create_task(engine.generate(p)) for p in others[:4]]
            await asyncio.sleep(0.05)  # the crowd is mid-run when the target joins
            crowded = asyncio.create_task(engine.generate(target))
            await asyncio.sleep(0.02)
            crowd += [asyncio.create_task(engine.generate(p)) for p in others[4:]]
            await asyncio.gather(*crowd)
            return alone, await crowded, engine.stats()

    alone, crowded, stats = run(alone_then_crowded())
    assert stats.max_batch_size_seen >= 4
    assert_same_image(crowded.output, alone.output)


def test_late_short_request_joins_as_soon_as_it_is_encoded_and_finishes_first(tiny_flux_dir):
    """Encoding runs beside the forward; the step running when it ends collects it, and the
    request runs in the step after that."""

    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            order: list[str] = []
            long_progress = 0

            async def consume(name, params):
                nonlocal long_progress
                async for event in engine.stream(params):
                    if isinstance(event, Progress) and name == "long":
                        long_progress = event.step_index
                    elif isinstance(event, Finished):
                        order.append(name)

            long = asyncio.create_task(consume("long", image_params(num_inference_steps=40)))
            while long_progress < 10:
                await asyncio.sleep(0.001)
            submitted = time.monotonic()
            await asyncio.gather(long, consume("short", image_params(num_inference_steps=2)))
            return order, submitted, engine._engine

    order, submitted, core = run(scenario())
    assert order == ["short", "long"]
    encoded = next(r.end for r in core.runner.stages.records if r.start >= submitted)
    steps_after = [s for s in core.step_records if s.end > encoded]
    assert [s.num_requests for s in steps_after[:2]] in ([1, 2], [2, 2])


def test_mixed_sizes_share_forwards_and_each_image_matches_the_request_alone(tiny_flux_dir):
    square = [image_params(seed=i) for i in range(3)]
    wide = [image_params(width=32, height=64, seed=i) for i in range(3)]
    large = [image_params(width=96, height=80, seed=7, num_inference_steps=6)]
    results, stats = generate_all(tiny_flux_dir, square + wide + large)
    assert [r.output.size for r in results] == [(64, 64)] * 3 + [(32, 64)] * 3 + [(96, 80)]
    assert stats.max_batch_size_seen == 7  # three sizes in one forward
    for packed, params in ((results[4], wide[1]), (results[6], large[0])):
        (alone,), _ = generate_all(tiny_flux_dir, [params])
        assert_same_image(packed.output, alone.output)
        assert_same_image(packed.output, diffusers_image(tiny_flux_dir, params))


def test_sizes_of_equal_token_counts_each_keep_their_own_positions(tiny_flux_dir):
    """32x64 and 64x32 have as many tokens as each other, so their rows are the same shape:
    only their rotary positions tell them apart."""
    tall, wide = image_params(width=32, height=64), image_params(width=64, height=32)
    results, stats = generate_all(tiny_flux_dir, [tall, wide])
    assert stats.max_batch_size_seen == 2
    for packed, params in zip(results, (tall, wide), strict=True):
        assert_same_image(packed.output, diffusers_image(tiny_flux_dir, params))


def test_abort_frees_the_slot_and_leaves_others_untouched(tiny_flux_dir):
    survivor = image_params(seed=5, num_inference_steps=8)

    async def scenario():
        async with running_engine(tiny_flux_dir, max_num_running=2) as engine:
            reference = await engine.generate(survivor)
            victim_steps = []

            async def victim():
                async for event in engine.stream(image_params(num_inference_steps=500)):
                    victim_steps.append(event.step_index)
                    if event.step_index == 3:
                        return  # closing the stream aborts the request

            kept = asyncio.create_task(engine.generate(survivor))
            await victim()
            # With max_num_running=2 this one can only start once the victim's slot is free.
            queued = await engine.generate(image_params(seed=9, num_inference_steps=2))
            return reference, await kept, queued, engine.stats(), victim_steps

    reference, kept, queued, stats, victim_steps = run(scenario())
    assert victim_steps[-1] == 3
    assert stats.num_aborted == 1 and stats.num_running == 0
    assert queued.output.size == (64, 64)
    assert_same_image(kept.output, reference.output)


def test_an_id_given_up_on_can_be_used_again_at_once_and_gets_its_own_result(tiny_flux_dir):
    """A caller that gave up on a request may use its id again: the stopped run's abort must not
    reach the new run's stream."""
    params = image_params(seed=21, num_inference_steps=4)

    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            reference = await engine.generate(params)
            stream = engine.stream(image_params(num_inference_steps=500), "job-1")
            async with aclosing(stream) as events:
                async for event in events:
                    if isinstance(event, Progress):
                        break  # given up on after its first step: the engine aborts it later
            again = await engine.generate(params, request_id="job-1")
            return reference, again, engine.stats()

    reference, again, stats = run(scenario())
    assert again.request_id == "job-1"
    assert_same_image(again.output, reference.output)
    assert stats.num_aborted == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_inference_steps": 0}, "num_inference_steps must be between"),
        ({"width": 40}, "not a multiple of 16"),
        ({"height": 8192}, "out of range"),
        ({"prompt": "  "}, "prompt must not be empty"),
        ({"num_frames": 9}, "num_frames is not supported"),
        ({"seed": -1}, "seed must be between"),
    ],
)
def test_bad_input_gets_a_clear_error_and_engine_keeps_serving(tiny_flux_dir, overrides, message):
    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            with pytest.raises(InvalidRequestError, match=message):
                await engine.generate(image_params(**overrides))
            return await engine.generate(image_params())

    assert run(scenario()).output.size == (64, 64)


def test_unknown_model_path_is_a_clear_error(tmp_path):
    async def scenario():
        async with running_engine(tmp_path / "no-such-model"):
            pass

    with pytest.raises(EngineNotReadyError, match=r"not found.*not a local directory"):
        run(scenario())


def test_fault_in_one_batch_fails_only_that_batch(tiny_flux_dir):
    async def scenario():
        # One request per forward: the two never share a batch.
        async with running_engine(tiny_flux_dir, max_batch_size=1) as engine:
            adapter = engine._engine.adapter
            real_predict = adapter.predict

            def faulty_predict(requests):
                if any(r.params.prompt == "boom" for r in requests):
                    raise RuntimeError("injected fault")
                return real_predict(requests)

            adapter.predict = faulty_predict
            doomed = engine.generate(image_params(prompt="boom", width=32))
            healthy = engine.generate(image_params(seed=4))
            outcomes = await asyncio.gather(doomed, healthy, return_exceptions=True)
            after = await engine.generate(image_params(seed=4))
            return outcomes, after, engine.stats()

    (doomed, healthy), after, stats = run(scenario())
    assert isinstance(doomed, RequestFailedError) and "injected fault" in str(doomed)
    assert isinstance(healthy, Finished)
    assert_same_image(healthy.output, after.output)
    assert stats.num_failed == 1 and stats.num_finished == 2


def test_different_seed_or_guidance_is_far_outside_the_tolerance(tiny_flux_dir):
    (base, reseeded, reguided), _ = generate_all(
        tiny_flux_dir,
        [image_params(), image_params(seed=1), image_params(guidance_scale=9.0)],
    )
    for other in (reseeded, reguided):
        with pytest.raises(AssertionError):
            assert_same_image(other.output, base.output)


def test_requests_submitted_together_share_their_first_batch(tiny_flux_dir):
    results, stats = generate_all(tiny_flux_dir, [image_params(seed=i) for i in range(3)])
    assert len(results) == 3
    assert stats.batch_size_counts == {3: 4}  # every one of the 4 steps ran all three


def test_a_stopped_engine_answers_instead_of_hanging(tiny_flux_dir):
    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            await engine.generate(image_params())
        with pytest.raises(EngineNotReadyError, match="stopped"):
            await engine.generate(image_params())
        return engine.state

    assert run(scenario(), timeout=30) == EngineState.DEAD


def test_an_overlong_prompt_is_refused_before_the_engine_tokenizes_it(tiny_flux_dir):
    async def scenario():
        async with running_engine(tiny_flux_dir) as engine:
            with pytest.raises(InvalidRequestError, match="at most 32000"):
                engine.resolve(image_params(prompt="word " * 10_000))
            with pytest.raises(InvalidRequestError, match="negative_prompt"):
                engine.resolve(image_params(negative_prompt="x" * 40_000))

    run(scenario())
