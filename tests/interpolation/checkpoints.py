"""RIFE 4.22.lite checkpoints written from the released network's key list, not from omni's module.

The table is Practical-RIFE 4.22.lite's IFNet as published: four IFBlocks of widths 192, 128,
64 and 32 (the first takes 15 input channels, the rest 28), each two stride-2 convolutions,
eight residual convolutions with a per-channel `beta`, and a transposed convolution to 4 * 13
channels; and a Head of three convolutions to 16 channels and a transposed one to 4. The
released `flownet.pkl` saves it from DataParallel (every key prefixed `module.`) together with
its training-only `teacher.` and `caltime.` branches.
"""

from __future__ import annotations

from pathlib import Path

import torch

BLOCKS = ((15, 192), (28, 128), (28, 64), (28, 32))  # (input channels, width)
NUM_RESIDUALS = 8
BLOCK_OUT = 4 * 13  # before the 2x pixel shuffle: 4 flow, 1 mask and 8 feature channels
HEAD = {
    "encode.cnn0.weight": (16, 3, 3, 3),
    "encode.cnn0.bias": (16,),
    "encode.cnn1.weight": (16, 16, 3, 3),
    "encode.cnn1.bias": (16,),
    "encode.cnn2.weight": (16, 16, 3, 3),
    "encode.cnn2.bias": (16,),
    "encode.cnn3.weight": (16, 4, 4, 4),  # ConvTranspose2d: (in, out, k, k)
    "encode.cnn3.bias": (4,),
}


def rife_key_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for index, (inputs, width) in enumerate(BLOCKS):
        block = f"block{index}"
        shapes[f"{block}.conv0.0.0.weight"] = (width // 2, inputs, 3, 3)
        shapes[f"{block}.conv0.0.0.bias"] = (width // 2,)
        shapes[f"{block}.conv0.1.0.weight"] = (width, width // 2, 3, 3)
        shapes[f"{block}.conv0.1.0.bias"] = (width,)
        for residual in range(NUM_RESIDUALS):
            prefix = f"{block}.convblock.{residual}"
            shapes[f"{prefix}.conv.weight"] = (width, width, 3, 3)
            shapes[f"{prefix}.conv.bias"] = (width,)
            shapes[f"{prefix}.beta"] = (1, width, 1, 1)
        shapes[f"{block}.lastconv.0.weight"] = (width, BLOCK_OUT, 4, 4)
        shapes[f"{block}.lastconv.0.bias"] = (BLOCK_OUT,)
    return shapes | HEAD


def released_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict laid out as the released flownet.pkl, small random values."""
    generator = torch.Generator().manual_seed(seed)
    state = {
        f"module.{name}": torch.randn(shape, generator=generator) * 0.05
        for name, shape in rife_key_shapes().items()
    }
    state["module.teacher.block0.conv0.0.0.weight"] = torch.zeros(8, 20, 3, 3)
    state["module.caltime.0.weight"] = torch.zeros(4, 4, 3, 3)
    return state


def write_checkpoint(directory: Path, state: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "flownet.pkl")
    return directory
