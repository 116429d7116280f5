"""RIFE's IFNet at version 4.22.lite (Practical-RIFE), the one vLLM-Omni ships by default.

Four coarse-to-fine blocks each refine two flows (middle frame to each input), a blend mask
and an 8-channel feature map; the middle frame is both inputs warped by their flows and
blended by the mask. Module and attribute names follow the released network exactly, because
they are its checkpoint's key names: `block0.conv0.0.0.weight`, `block1.convblock.3.beta`,
`encode.cnn3.bias`, and so on (`flownet.pkl` adds a `module.` prefix; see `weights`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_CHANNELS = 4  # the Head's output per image
BLOCK_OUTPUTS = 13  # 4 flow + 1 mask + 8 feature channels
BLOCK_WIDTHS = (192, 128, 64, 32)  # coarse to fine
# Inputs of the first block: both images, both features, the timestep. Later blocks add the
# warped images in place of the raw ones, the mask, the features and the flow so far.
FIRST_BLOCK_INPUTS = 3 + 3 + 2 * FEATURE_CHANNELS + 1
LATER_BLOCK_INPUTS = 3 + 3 + 2 * FEATURE_CHANNELS + 1 + 1 + (BLOCK_OUTPUTS - 5) + 4
SCALES = (8.0, 4.0, 2.0, 1.0)  # each block's downsampling at inference scale 1


def conv_relu(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1), nn.LeakyReLU(0.2, True))


class ResConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class IFBlock(nn.Module):
    """One scale: inputs downsampled by `scale`, a stride-4 trunk, outputs back at full size."""

    def __init__(self, inputs: int, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(
            conv_relu(inputs, channels // 2, stride=2), conv_relu(channels // 2, channels, stride=2)
        )
        self.convblock = nn.Sequential(*(ResConv(channels) for _ in range(8)))
        self.lastconv = nn.Sequential(
            nn.ConvTranspose2d(channels, 4 * BLOCK_OUTPUTS, 4, 2, 1), nn.PixelShuffle(2)
        )

    def forward(
        self, x: torch.Tensor, flow: torch.Tensor | None, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        x = F.interpolate(x, scale_factor=1 / scale, mode="bilinear", align_corners=False)
        if flow is not None:
            small = F.interpolate(
                flow, scale_factor=1 / scale, mode="bilinear", align_corners=False
            )
            x = torch.cat((x, small / scale), 1)
        out = self.lastconv(self.convblock(self.conv0(x)))
        # Back to the exact input size (the reference scales by `scale`, the same size whenever
        # the sides divide evenly), so any inference scale keeps the shapes consistent.
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out[:, :4] * scale, out[:, 4:5], out[:, 5:]


class Head(nn.Module):
    """Per-image features at full size: stride 2 down, two convolutions, stride 2 up."""

    def __init__(self) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
        self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(16, FEATURE_CHANNELS, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class IFNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        widths = BLOCK_WIDTHS
        self.block0 = IFBlock(FIRST_BLOCK_INPUTS, widths[0])
        self.block1 = IFBlock(LATER_BLOCK_INPUTS, widths[1])
        self.block2 = IFBlock(LATER_BLOCK_INPUTS, widths[2])
        self.block3 = IFBlock(LATER_BLOCK_INPUTS, widths[3])
        self.encode = Head()

    def forward(
        self, img0: torch.Tensor, img1: torch.Tensor, scale: float = 1.0, timestep: float = 0.5
    ) -> torch.Tensor:
        """The frame at `timestep` between img0 and img1, [B, 3, H, W] in 0..1 each.

        `scale` is RIFE's inference scale: flows are estimated at `scale` times the resolution
        (0.5 for 4K input, 2 for small or detailed video).
        """
        batch, _, height, width = img0.shape
        time = img0.new_full((batch, 1, height, width), timestep)
        feature0, feature1 = self.encode(img0), self.encode(img1)
        blocks = (self.block0, self.block1, self.block2, self.block3)
        warped0, warped1 = img0, img1
        flow = mask = feature = None
        for block, block_scale in zip(blocks, SCALES, strict=True):
            if flow is None:
                x = torch.cat((img0, img1, feature0, feature1, time), 1)
                flow, mask, feature = block(x, None, block_scale / scale)
            else:
                x = torch.cat(
                    (
                        warped0,
                        warped1,
                        warp(feature0, flow[:, :2]),
                        warp(feature1, flow[:, 2:4]),
                        time,
                        mask,
                        feature,
                    ),
                    1,
                )
                delta, mask, feature = block(x, flow, block_scale / scale)
                flow = flow + delta
            warped0 = warp(img0, flow[:, :2])
            warped1 = warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask)
        return warped0 * weight + warped1 * (1 - weight)


def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """`image` sampled at each pixel plus its flow (in pixels), bilinear, edges repeated."""
    height, width = flow.shape[-2:]
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=flow.dtype)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=flow.dtype)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, (x, y)]
    pixels_to_unit = flow.new_tensor([(width - 1) / 2, (height - 1) / 2])
    grid = base + flow.permute(0, 2, 3, 1) / pixels_to_unit
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
