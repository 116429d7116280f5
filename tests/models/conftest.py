"""Adapters over the session's tiny model directories, one per test module."""

from __future__ import annotations

import pytest
import torch

from omni.models.flux import FluxAdapter
from omni.models.wan import WanAdapter

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def flux(tiny_flux_dir) -> FluxAdapter:
    return FluxAdapter("tiny", tiny_flux_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def t2v(tiny_wan_dir) -> WanAdapter:
    return WanAdapter("tiny-wan", tiny_wan_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def t2v_two_experts(tiny_wan22_dir) -> WanAdapter:
    return WanAdapter("tiny-wan22", tiny_wan22_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def i2v(tiny_wan_i2v_dir) -> WanAdapter:
    return WanAdapter("tiny-wan-i2v", tiny_wan_i2v_dir, CPU, torch.float32)
