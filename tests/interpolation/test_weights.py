"""RIFE checkpoints: the released layout loads strictly; other files and paths are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omni.errors import InvalidRequestError
from omni.interpolation.weights import load_model, resolve_model
from omni.models.tiny.rife import TINY_RIFE
from tests.interpolation.checkpoints import released_state, rife_key_shapes, write_checkpoint

PARAM = "frame_interpolation_model_path"


def test_a_released_layout_checkpoint_loads_strictly_with_its_values(tmp_path: Path) -> None:
    state = released_state(seed=3)
    net = load_model(str(write_checkpoint(tmp_path / "rife", state)))

    loaded = net.state_dict()
    assert set(loaded) == set(rife_key_shapes())
    for name, value in loaded.items():
        assert torch.equal(value, state[f"module.{name}"]), name


def test_unprefixed_keys_load_too(tmp_path: Path) -> None:
    state = {name.removeprefix("module."): value for name, value in released_state().items()}
    load_model(str(write_checkpoint(tmp_path / "rife", state)))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.pop("module.block3.convblock.7.beta"), id="a missing key"),
        pytest.param(lambda s: s.update({"module.block4.beta": torch.ones(1)}), id="extra key"),
        pytest.param(
            lambda s: s.update({"module.block0.lastconv.0.weight": torch.zeros(240, 52, 4, 4)}),
            id="another version's width",
        ),
        pytest.param(
            lambda s: s.update({"block0.conv0.0.0.bias": s.pop("module.block0.conv0.0.0.bias")}),
            id="mixed prefixes",
        ),
    ],
)
def test_a_checkpoint_that_is_not_this_ifnet_is_refused(tmp_path: Path, change) -> None:
    state = released_state()
    change(state)
    directory = write_checkpoint(tmp_path / "rife", state)

    with pytest.raises(InvalidRequestError) as caught:
        load_model(str(directory))
    assert caught.value.param == PARAM


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    (tmp_path / "rife").mkdir()
    (tmp_path / "rife" / "flownet.pkl").write_bytes(b"not a pickle")

    with pytest.raises(InvalidRequestError, match="could not be read"):
        load_model(str(tmp_path / "rife"))


def test_paths_resolve_inside_the_root_only(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    inside = write_checkpoint(root / "rife", released_state())
    write_checkpoint(outside, released_state())
    (root / "escape").symlink_to(outside, target_is_directory=True)

    assert resolve_model("rife", root) == str(inside.resolve())
    assert resolve_model(str(inside), root) == str(inside.resolve())
    assert resolve_model(TINY_RIFE, root) == TINY_RIFE
    for refused in ("../outside", str(outside), "escape", "missing", ""):
        with pytest.raises(InvalidRequestError) as caught:
            resolve_model(refused, root)
        assert caught.value.param == PARAM


def test_without_a_root_only_the_builtin_model_is_taken(tmp_path: Path) -> None:
    directory = write_checkpoint(tmp_path / "rife", released_state())

    assert resolve_model(TINY_RIFE, None) == TINY_RIFE
    with pytest.raises(InvalidRequestError, match="--frame-interpolation-dir"):
        resolve_model(str(directory), None)
