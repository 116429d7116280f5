"""The tiny Qwen-Image-Edit model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_qwen_edit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.qwen_image_edit import build_tiny_qwen_image_edit

    return build_tiny_qwen_image_edit(tmp_path_factory.mktemp("models") / "tiny-qwen-edit")


@pytest.fixture(scope="session")
def tiny_qwen_edit_plus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.qwen_image_edit import build_tiny_qwen_image_edit

    path = tmp_path_factory.mktemp("models") / "tiny-qwen-edit-plus"
    return build_tiny_qwen_image_edit(path, plus=True)
