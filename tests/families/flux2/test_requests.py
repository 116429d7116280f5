"""Other samplers run end to end; fields FLUX.2 [klein] does not take are refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from omni.errors import InvalidRequestError
from tests.conftest import run
from tests.engine.helpers import generate_all, pixels, running_engine
from tests.families.flux2.helpers import klein_params


def test_unipc_and_dpm_requests_run_end_to_end(tiny_flux2_dir):
    samplers = ["euler", "unipc", "dpm++2m"]
    results, _ = generate_all(tiny_flux2_dir, [klein_params(sampler=s) for s in samplers])
    assert [r.params.sampler for r in results] == samplers
    euler = pixels(results[0].output)
    for result in results[1:]:
        image = pixels(result.output)
        assert result.output.size == (64, 64) and image.std() > 0
        assert np.abs(image - euler).mean() > 0  # another solver, another image


@pytest.mark.parametrize(
    ("field", "value"),
    [("true_cfg_scale", 3.0), ("num_frames", 5), ("flow_shift", 2.0), ("guidance_scale_2", 2.0)],
)
def test_fields_klein_does_not_take_are_refused_by_name(tiny_flux2_dir, field, value):
    async def scenario() -> InvalidRequestError:
        async with running_engine(tiny_flux2_dir) as engine:
            with pytest.raises(InvalidRequestError) as error:
                engine.resolve(klein_params(**{field: value}))
            return error.value

    error = run(scenario())
    assert error.param == field and field in str(error)


def test_sizes_off_the_patch_grid_are_refused(tiny_flux2_dir):
    async def scenario() -> InvalidRequestError:
        async with running_engine(tiny_flux2_dir) as engine:
            with pytest.raises(InvalidRequestError) as error:
                engine.resolve(klein_params(width=40))
            return error.value

    error = run(scenario())
    assert error.param == "size" and "multiple of 16" in str(error)
