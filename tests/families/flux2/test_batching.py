"""Requests with different prompts, seeds, steps, guidance and samplers share forwards, and each
result is what the request makes alone."""

from __future__ import annotations

import asyncio

from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine
from tests.families.flux2.helpers import klein_params, pipeline_image

CROWD = [
    klein_params(seed=1, num_inference_steps=5),
    klein_params(prompt="a boat on a calm sea", seed=2, guidance_scale=1.0),
    klein_params(prompt="a city at night", seed=3, num_inference_steps=3, sampler="unipc"),
    klein_params(prompt="a bowl of fruit", seed=4, sampler="dpm++2m", negative_prompt="dark"),
    klein_params(prompt="a dog in the park", seed=5, width=32, height=48),  # another size
]


def test_a_crowd_shares_forwards_and_each_matches_its_solo_run(tiny_flux2_dir):
    async def scenario():
        async with running_engine(tiny_flux2_dir) as engine:
            together = await asyncio.gather(*(engine.generate(p) for p in CROWD))
            stats = engine.stats()
            alone = [await engine.generate(p) for p in CROWD]
            return together, alone, stats

    together, alone, stats = run(scenario())
    # All five (four prompts, two sizes, steps 3 to 5, three samplers, with and without CFG)
    # ran their first three steps in one forward each.
    assert stats.max_batch_size_seen == 5
    assert stats.batch_size_counts[5] >= 3
    for shared, solo in zip(together, alone, strict=True):
        assert shared.output.size == solo.output.size
        assert_same_image(shared.output, solo.output)


def test_requests_submitted_together_share_every_step(tiny_flux2_dir):
    prompts = ["a red fox in the snow", "a lighthouse at dusk", "an astronaut on the moon"]
    crowd = [klein_params(prompt=p, seed=i) for i, p in enumerate(prompts)]
    results, stats = generate_all(tiny_flux2_dir, crowd)
    assert stats.batch_size_counts == {3: 4}  # all three in each of the 4 steps
    assert stats.num_rows_run == 3 * 2 * 4  # with their CFG rows
    assert len({r.output.tobytes() for r in results}) == 3


def test_mixed_sizes_share_forwards_and_each_matches_the_pipeline(tiny_flux2_dir):
    square = [klein_params(seed=i) for i in range(2)]
    tall = [klein_params(width=32, height=64, seed=i, guidance_scale=1.0) for i in range(2)]
    large = [klein_params(width=96, height=80, seed=7, num_inference_steps=5)]
    results, stats = generate_all(tiny_flux2_dir, square + tall + large)
    assert [r.output.size for r in results] == [(64, 64)] * 2 + [(32, 64)] * 2 + [(96, 80)]
    assert stats.max_batch_size_seen == 5  # three sizes in one forward
    for packed, params in ((results[3], tall[1]), (results[4], large[0])):
        assert_same_image(packed.output, pipeline_image(tiny_flux2_dir, params))
