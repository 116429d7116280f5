"""Samplers other than the shipped Euler run end to end; fields Qwen-Image does not take are
refused by name."""

from __future__ import annotations

import pytest

from omni.errors import InvalidRequestError
from tests.conftest import run
from tests.engine.helpers import assert_same_image, generate_all, running_engine
from tests.families.qwen_image.helpers import qwen_params


def test_unipc_and_dpm_requests_run_end_to_end_and_differ_from_euler(tiny_qwen_image_dir, qwen):
    assert qwen.default_sampler == "euler"
    params = [qwen_params(negative_prompt=" ", sampler=s) for s in ("euler", "unipc", "dpm++2m")]
    (euler, unipc, dpm), _ = generate_all(tiny_qwen_image_dir, params)
    for other in (unipc, dpm):
        assert other.output.size == (64, 64)
        with pytest.raises(AssertionError):
            assert_same_image(other.output, euler.output)


@pytest.mark.parametrize(
    "field", [{"num_frames": 9}, {"flow_shift": 3.0}, {"guidance_scale_2": 2.0}, {"fps": 8}]
)
def test_a_field_qwen_image_does_not_take_is_refused_by_name(tiny_qwen_image_dir, field):
    async def scenario():
        async with running_engine(tiny_qwen_image_dir) as engine:
            with pytest.raises(InvalidRequestError) as refused:
                await engine.generate(qwen_params(**field))
            return refused.value, await engine.generate(qwen_params())

    error, after = run(scenario())
    (name,) = field
    assert error.param == name and name in str(error)
    assert after.output.size == (64, 64)


def test_a_size_off_the_patch_grid_is_refused(qwen):
    with pytest.raises(InvalidRequestError, match="multiple of 16") as refused:
        qwen.resolve(qwen_params(width=40))
    assert refused.value.param == "size"
