from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("transformers").setLevel(logging.ERROR)

T = TypeVar("T")


def run(coroutine: Awaitable[T], timeout: float = 120.0) -> T:
    """Run a coroutine to completion; tests stay plain functions."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture(scope="session")
def tiny_flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-flux")


@pytest.fixture(scope="session")
def tiny_flux_kontext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("models") / "tiny-kontext", kontext=True)


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


@pytest.fixture(scope="session")
def tiny_wan22_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Text-to-video with two experts (Wan2.2 A14B layout)."""
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan22", two_experts=True)


@pytest.fixture(scope="session")
def tiny_wan_i2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Image-to-video with two experts (Wan2.2 I2V A14B layout)."""
    from omni.models.tiny import build_tiny_wan

    return build_tiny_wan(
        tmp_path_factory.mktemp("models") / "tiny-wan-i2v", image_to_video=True, two_experts=True
    )
