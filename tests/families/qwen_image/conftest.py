"""The tiny Qwen-Image model, built once per session, and an adapter over it per module."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from omni.models.qwen_image import QwenImageAdapter


@pytest.fixture(scope="session")
def tiny_qwen_image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from omni.models.tiny.qwen_image import build_tiny_qwen_image

    return build_tiny_qwen_image(tmp_path_factory.mktemp("models") / "tiny-qwen-image")


@pytest.fixture(scope="module")
def qwen(tiny_qwen_image_dir: Path) -> QwenImageAdapter:
    return QwenImageAdapter(
        "tiny-qwen-image", tiny_qwen_image_dir, torch.device("cpu"), torch.float32
    )
