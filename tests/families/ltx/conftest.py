from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ltx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.ltx import build_tiny_ltx

    return build_tiny_ltx(tmp_path_factory.mktemp("models") / "tiny-ltx")


@pytest.fixture(scope="session")
def tiny_ltx_timestep_vae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VAE decoder takes a timestep, as from LTX-Video 0.9.1 on."""
    from omni.models.tiny.ltx import build_tiny_ltx

    path = tmp_path_factory.mktemp("models") / "tiny-ltx-timestep-vae"
    return build_tiny_ltx(path, timestep_conditioning=True)
