"""An adapter file read the way diffusers' `load_lora_weights` reads it, as low-rank factors per
Linear layer of the family's transformer.

The pipeline class's own `lora_state_dict` runs diffusers' converters (kohya, xlabs, musubi, ...)
and `convert_unet_state_dict_to_peft` gives PEFT keys; diffusers' `_create_lora_config` decides
each layer's rank and alpha, and PEFT's pattern rule picks them per layer, so a layer's scaling is
the `lora_alpha / r` a PEFT LoraLayer would hold. Nothing is merged into the base weights.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omni.errors import InvalidRequestError

LORA_KEYS = (".lora_A.", ".lora_B.")


@dataclass(frozen=True, slots=True)
class LoraLayer:
    down: torch.Tensor  # lora_A: [rank, in_features]
    up: torch.Tensor  # lora_B: [out_features, rank]
    scaling: float  # lora_alpha / r (PEFT's)


@dataclass(eq=False)
class LoraWeights:
    """One adapter on the device: its layers by the transformer's module names."""

    identity: Any  # what the LRU knows it by: the file's path, mtime and size
    label: str
    layers: dict[str, LoraLayer]
    rank: int

    @property
    def nbytes(self) -> int:
        return sum(x.down.nbytes + x.up.nbytes for x in self.layers.values())


def read_lora(
    path: Path,
    label: str,
    pipeline_class: type,
    transformer: torch.nn.Module,
    max_rank: int,
    identity: Any = None,
) -> LoraWeights:
    """The adapter at `path` for `transformer`; InvalidRequestError naming what does not fit."""
    state_dict, alphas, metadata = _diffusers_state_dict(path, label, pipeline_class)
    prefix = f"{getattr(pipeline_class, 'transformer_name', 'transformer')}."
    others = sorted(k for k in state_dict if not k.startswith(prefix))
    if any(k.startswith("text_encoder") for k in others):
        raise InvalidRequestError(
            f"lora {label!r} has text-encoder weights ({others[0]}): omni applies LoRA to the "
            "transformer only, so it would not match the adapter's trained behaviour",
            param="lora",
        )
    own = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    if own:
        own = _as_peft(own)
    strays = others + sorted(k for k in own if not any(marker in k for marker in LORA_KEYS))
    if strays or not own:
        raise InvalidRequestError(
            f"lora {label!r} is not a LoRA for {pipeline_class.__name__}'s transformer "
            f"({f'key {strays[0]!r} is not one of its LoRA weights' if strays else 'no weights'})",
            param="lora",
        )
    config = _lora_config(own, alphas, metadata, prefix)
    modules = dict(transformer.named_modules())
    layers = {}
    for name in sorted({key.split(".lora_")[0] for key in own}):
        layers[name] = _layer(own, name, modules.get(name), label, config, max_rank)
    rank = max(layer.down.shape[0] for layer in layers.values())
    return LoraWeights(identity, label, layers, rank)


def _diffusers_state_dict(path: Path, label: str, pipeline_class: type) -> tuple[dict, dict, dict]:
    """(state dict, network alphas, metadata) from the pipeline class's `lora_state_dict`."""
    read = pipeline_class.lora_state_dict
    kwargs: dict[str, Any] = {"return_lora_metadata": True}
    if "return_alphas" in inspect.signature(read).parameters:
        kwargs["return_alphas"] = True
    try:
        output = read(str(path), local_files_only=True, **kwargs)
    except Exception as exc:  # diffusers raises many types for a file that is not a LoRA
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise InvalidRequestError(
            f"lora {label!r} could not be read as a LoRA for {pipeline_class.__name__}: {reason}",
            param="lora",
        ) from None
    if not isinstance(output, tuple):
        return output, {}, {}
    if len(output) == 3:
        state_dict, alphas, metadata = output
    else:
        (state_dict, metadata), alphas = output, {}
    return state_dict, alphas or {}, metadata or {}


def _as_peft(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT keys (`<module>.lora_A.weight`), as `load_lora_adapter` converts them."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    if "lora_A" not in next(iter(state_dict)):
        state_dict = convert_unet_state_dict_to_peft(state_dict)
    return state_dict


def _lora_config(own: dict, alphas: dict, metadata: dict, prefix: str) -> Any:
    """diffusers' LoraConfig for these weights: r, lora_alpha and their per-layer patterns."""
    from diffusers.utils.peft_utils import _create_lora_config

    ranks = {f"^{k}": v.shape[1] for k, v in own.items() if "lora_B" in k and v.ndim > 1}
    alphas = {k.removeprefix(prefix): v for k, v in alphas.items() if k.startswith(prefix)}
    metadata = {k.removeprefix(prefix): v for k, v in metadata.items() if k.startswith(prefix)}
    return _create_lora_config(own, alphas or None, metadata or None, ranks)


def _layer(
    own: dict[str, torch.Tensor],
    name: str,
    module: torch.nn.Module | None,
    label: str,
    config: Any,
    max_rank: int,
) -> LoraLayer:
    from peft.utils.other import get_pattern_key

    def refuse(why: str) -> InvalidRequestError:
        return InvalidRequestError(f"lora {label!r} does not fit this model: {why}", param="lora")

    down, up = own.get(f"{name}.lora_A.weight"), own.get(f"{name}.lora_B.weight")
    extra = sorted(
        set(k for k in own if k.startswith(f"{name}.lora_"))
        - {
            f"{name}.lora_A.weight",
            f"{name}.lora_B.weight",
        }
    )
    if extra:
        raise refuse(f"{extra[0]} is not plain LoRA (DoRA, LoRA bias and others are not served)")
    if down is None or up is None:
        raise refuse(f"layer {name} lacks its lora_A or lora_B weight")
    if not isinstance(module, torch.nn.Linear):
        raise refuse(f"{name} is not a Linear layer of the transformer")
    rank = down.shape[0]
    if down.shape != (rank, module.in_features) or up.shape != (module.out_features, rank):
        raise refuse(
            f"{name} has factors {tuple(down.shape)} and {tuple(up.shape)}, but the layer maps "
            f"{module.in_features} to {module.out_features} features"
        )
    if rank > max_rank:
        raise InvalidRequestError(
            f"lora {label!r} has rank {rank} (layer {name}), over this server's "
            f"--max-lora-rank {max_rank}",
            param="lora",
        )
    r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), name), config.r)
    alpha = config.alpha_pattern.get(
        get_pattern_key(config.alpha_pattern.keys(), name), config.lora_alpha
    )
    scaling = alpha / math.sqrt(r) if config.use_rslora else alpha / r
    weight = module.weight
    return LoraLayer(
        down.to(weight.device, weight.dtype), up.to(weight.device, weight.dtype), float(scaling)
    )
