from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_z_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Z-Image-Turbo shaped ZImagePipeline with random weights (omni.json: 64x64, 4 steps,
    guidance 0)."""
    from omni.models.tiny.z_image import build_tiny_z_image

    return build_tiny_z_image(tmp_path_factory.mktemp("models") / "tiny-z-image")
