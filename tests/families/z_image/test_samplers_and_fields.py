"""Every sampler runs end to end; fields Z-Image does not take are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from omni.errors import InvalidRequestError
from tests.conftest import run
from tests.engine.helpers import generate_all, pixels, running_engine
from tests.families.z_image.helpers import z_params


def test_unipc_and_dpm_run_end_to_end(tiny_z_image_dir):
    samplers = ["euler", "unipc", "dpm++2m"]
    results, _ = generate_all(
        tiny_z_image_dir, [z_params(sampler=s, num_inference_steps=5) for s in samplers]
    )
    assert [r.params.sampler for r in results] == samplers
    images = [pixels(r.output) for r in results]
    assert all(image.shape == (64, 64, 3) for image in images)
    assert all(np.isfinite(image).all() and image.std() > 0 for image in images)
    assert not np.array_equal(images[1], images[2])  # the solvers differ


@pytest.mark.parametrize(
    "field", [{"true_cfg_scale": 3.0}, {"num_frames": 5}, {"flow_shift": 2.0}], ids=str
)
def test_fields_z_image_does_not_take_are_named(tiny_z_image_dir, field):
    async def scenario():
        async with running_engine(tiny_z_image_dir) as engine:
            with pytest.raises(InvalidRequestError) as error:
                engine.resolve(z_params(**field))
            return error.value

    error = run(scenario())
    (name,) = field
    assert error.param == name and name in str(error)
