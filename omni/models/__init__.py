"""Model families and how a model name becomes a loaded adapter."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from omni.config import EngineConfig
from omni.errors import ModelNotFoundError
from omni.models.base import FamilyAdapter, ModelInfo, ServingDefaults
from omni.models.registry import adapter_class

__all__ = [
    "FamilyAdapter",
    "ModelInfo",
    "ServingDefaults",
    "load_adapter",
    "load_model",
    "resolve_model_dir",
]


def resolve_model_dir(model: str) -> Path:
    """A built-in name, a local diffusers directory, or a hub id already in the local cache."""
    from omni.models.tiny import BUILTIN_MODELS, ensure_builtin

    if model in BUILTIN_MODELS:
        return ensure_builtin(model)
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{model} is a directory but not a diffusers pipeline: it has no model_index.json"
            )
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        builtins = ", ".join(sorted(BUILTIN_MODELS))
        raise ModelNotFoundError(
            f"model {model!r} not found: it is not a built-in model ({builtins}), not a local "
            "directory, and not in the local Hugging Face cache (omni does not download weights)"
        ) from exc


def load_adapter(model: str, name: str, device: torch.device, dtype: torch.dtype) -> FamilyAdapter:
    model_dir = resolve_model_dir(model)
    pipeline_class = json.loads((model_dir / "model_index.json").read_text())["_class_name"]
    return adapter_class(pipeline_class)(name, model_dir, device, dtype)


def load_model(config: EngineConfig) -> FamilyAdapter:
    """The adapter every rank of an engine loads: model, device, dtype, attention backend."""
    from omni.models.attention import apply_attention_backend

    adapter = load_adapter(config.model, config.name, config.torch_device, config.torch_dtype)
    apply_attention_backend(adapter, config.attention_backend)
    if problem := adapter.cache_problem(config.cache):
        raise ValueError(f"--cache {config.cache}: {problem}")
    return adapter
