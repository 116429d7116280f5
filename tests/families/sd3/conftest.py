"""The tiny SD3 model directories: the plain SD3.5 Large layout and SD3.5 Medium's
dual-attention (MMDiT-X) layout, each built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3")


@pytest.fixture(scope="session")
def tiny_sd3_dual_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("models") / "tiny-sd3-dual", dual_attention=True)


@pytest.fixture(params=["plain", "dual-attention"], scope="session")
def any_sd3_dir(request: pytest.FixtureRequest, tiny_sd3_dir: Path, tiny_sd3_dual_dir: Path):
    return tiny_sd3_dir if request.param == "plain" else tiny_sd3_dual_dir
