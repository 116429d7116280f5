from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_flux2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FLUX.2 [klein] base layout: real CFG against the empty prompt when guidance_scale > 1."""
    from omni.models.tiny.flux2 import build_tiny_flux2_klein

    return build_tiny_flux2_klein(tmp_path_factory.mktemp("models") / "tiny-flux2-klein")


@pytest.fixture(scope="session")
def tiny_flux2_distilled_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The step-distilled layout (is_distilled): guidance_scale is ignored, one row a request."""
    from omni.models.tiny.flux2 import build_tiny_flux2_klein

    path = tmp_path_factory.mktemp("models") / "tiny-flux2-klein-distilled"
    return build_tiny_flux2_klein(path, is_distilled=True)
