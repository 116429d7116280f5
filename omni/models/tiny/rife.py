"""omni-tiny-rife: RIFE 4.22.lite's IFNet (the real architecture, 5 M parameters) with seeded
random weights, the frame interpolator of omni-tiny-video."""

from __future__ import annotations

from omni.interpolation.ifnet import IFNet
from omni.models.tiny.common import _seeded

TINY_RIFE = "omni-tiny-rife"
TINY_RIFE_SEED = 15


def build_tiny_rife() -> IFNet:
    with _seeded(TINY_RIFE_SEED, TINY_RIFE):
        return IFNet().eval()
