"""IFNet's maths on random weights: identical frames come back, batching changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni.interpolation.frames import interpolate_frames
from omni.interpolation.ifnet import IFNet
from omni.models.tiny.rife import build_tiny_rife

# float32 grid sampling at integer positions, and a convex blend of two equal values
IDENTITY_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def net() -> IFNet:
    return build_tiny_rife()


def without_flow(net: IFNet) -> IFNet:
    """The same random network with the flow outputs of every block zeroed (mask kept)."""
    still = IFNet().eval()
    still.load_state_dict(net.state_dict())
    with torch.no_grad():
        for block in (still.block0, still.block1, still.block2, still.block3):
            last = block.lastconv[0]  # 4 * 13 channels before the 2x pixel shuffle: flow first
            last.weight[:, :16] = 0
            last.bias[:16] = 0
    return still


def textured(batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_identical_flat_frames_come_back_whatever_the_flow(net: IFNet) -> None:
    colours = torch.tensor([[0.1, 0.8, 0.35], [0.9, 0.2, 0.6]])
    frames = colours[:, :, None, None].expand(2, 3, 32, 32).contiguous()

    with torch.inference_mode():
        middle = net(frames, frames)

    assert (middle - frames).abs().max() < IDENTITY_TOLERANCE


def test_identical_textured_frames_come_back_when_the_flow_is_zero(net: IFNet) -> None:
    frames = textured(1, 32, 32)
    still = without_flow(net)

    with torch.inference_mode():
        middle = still(frames, frames)
        moved = net(frames, frames)

    assert (middle - frames).abs().max() < IDENTITY_TOLERANCE
    assert (moved - frames).abs().max() > 0.01  # the random flows do move pixels


def test_interpolating_a_still_video_repeats_its_frame(net: IFNet) -> None:
    frame = (textured(1, 24, 30).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    video = np.repeat(frame, 2, axis=0)

    with torch.inference_mode():
        made = interpolate_frames(without_flow(net), video, exp=2)

    assert made.shape == (5, 24, 30, 3)
    assert np.abs(made.astype(int) - frame.astype(int)).max() <= 1  # uint8 rounding


@pytest.mark.parametrize("exp", [1, 2])
def test_n_frames_become_n_minus_1_times_2_to_the_exp_plus_1(net: IFNet, exp: int) -> None:
    video = (textured(3, 20, 18, seed=exp).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)

    with torch.inference_mode():
        made = interpolate_frames(net, video, exp=exp)

    assert made.shape == ((3 - 1) * 2**exp + 1, 20, 18, 3)
    assert np.array_equal(made[:: 2**exp], video)  # the original frames, untouched


def test_pairs_in_one_batch_or_in_chunks_give_the_same_frames(net: IFNet) -> None:
    video = (textured(4, 16, 16, seed=5).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)

    with torch.inference_mode():
        batched = interpolate_frames(net, video, exp=2, max_pairs=8)
        chunked = interpolate_frames(net, video, exp=2, max_pairs=2)

    assert np.abs(batched.astype(int) - chunked.astype(int)).max() <= 1


@pytest.mark.parametrize("scale", [0.25, 0.7, 4.0])  # the bounds, and one off the usual powers
def test_every_allowed_scale_keeps_the_frame_size(net: IFNet, scale: float) -> None:
    left, right = textured(1, 32, 32, seed=1), textured(1, 32, 32, seed=2)

    with torch.inference_mode():
        middle = net(left, right, scale=scale)

    assert middle.shape == left.shape
    assert torch.isfinite(middle).all()


def test_the_tiny_model_is_the_same_every_build(net: IFNet) -> None:
    again = build_tiny_rife()

    for name, value in again.state_dict().items():
        assert torch.equal(value, net.state_dict()[name]), name
