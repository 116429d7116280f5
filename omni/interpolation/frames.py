"""A video's frames interpolated by RIFE, as vLLM-Omni does it, batched over frame pairs.

Each pass puts RIFE's middle frame into every gap, so `exp` passes turn N frames into
(N - 1) * 2**exp + 1: the recursive midpoints of vLLM-Omni's interpolator (timestep 0.5 every
time, later passes fed the earlier passes' float frames). The frames go through in chunks of
consecutive pairs, every pass of a chunk in batches of up to `max_pairs` pairs, so memory stays
bounded however long the video is.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from omni.interpolation.ifnet import IFNet

PAD_MULTIPLE = 32  # sides are padded to this, as RIFE's own inference does
DEFAULT_MAX_PAIRS = 8


def interpolate_frames(
    net: IFNet,
    frames: np.ndarray,
    exp: int,
    scale: float = 1.0,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> np.ndarray:
    """uint8 frames [F, H, W, 3] -> [(F - 1) * 2**exp + 1, H, W, 3]; originals kept as they are."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [frames, height, width, 3], got {frames.shape}")
    if exp < 0:
        raise ValueError(f"exp must not be negative, got {exp}")
    if len(frames) < 2 or exp == 0:
        return frames
    parameter = next(net.parameters())
    out = [frames[:1]]
    for start in range(0, len(frames) - 1, max_pairs):
        chunk = to_tensor(frames[start : start + max_pairs + 1], parameter)
        for _ in range(exp):
            chunk = with_midpoints(net, chunk, scale, max_pairs)
        made = to_uint8(chunk[1:])
        factor = 2**exp
        made[factor - 1 :: factor] = frames[start + 1 : start + max_pairs + 1]  # exact originals
        out.append(made)
    return np.concatenate(out)


def with_midpoints(net: IFNet, frames: torch.Tensor, scale: float, max_pairs: int) -> torch.Tensor:
    """[F, 3, H, W] -> [2F - 1, 3, H, W]: every gap filled with RIFE's middle frame."""
    num_pairs = len(frames) - 1
    middles = []
    for start in range(0, num_pairs, max_pairs):
        end = min(start + max_pairs, num_pairs)
        middles.append(middle_frames(net, frames[start:end], frames[start + 1 : end + 1], scale))
    middle = torch.cat(middles)
    woven = frames.new_empty((2 * len(frames) - 1, *frames.shape[1:]))
    woven[0::2] = frames
    woven[1::2] = middle
    return woven


def middle_frames(
    net: IFNet, left: torch.Tensor, right: torch.Tensor, scale: float
) -> torch.Tensor:
    """The frames half-way between `left[i]` and `right[i]`, one batched forward."""
    height, width = left.shape[-2:]
    pad = (0, -width % PAD_MULTIPLE, 0, -height % PAD_MULTIPLE)
    middle = net(F.pad(left, pad), F.pad(right, pad), scale=scale)
    return middle[:, :, :height, :width].clamp(0.0, 1.0)


def to_tensor(frames: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(like.device)
    return pixels.permute(0, 3, 1, 2).to(like.dtype) / 255.0


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    pixels = (frames * 255.0).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()
