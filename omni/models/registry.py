"""Which adapter serves a pipeline: one table from model_index.json's `_class_name`.

Modules are imported only when their family is loaded, so serving one family never imports
another's diffusers classes.
"""

from __future__ import annotations

import importlib

from omni.errors import ModelNotFoundError
from omni.models.base import FamilyAdapter

FAMILIES: dict[str, str] = {
    "FluxPipeline": "omni.models.flux:FluxAdapter",
    "FluxKontextPipeline": "omni.models.flux_kontext:FluxKontextAdapter",
    "WanPipeline": "omni.models.wan:WanAdapter",
    "WanImageToVideoPipeline": "omni.models.wan:WanAdapter",
    "QwenImagePipeline": "omni.models.qwen_image:QwenImageAdapter",
    "QwenImageEditPipeline": "omni.models.qwen_image_edit:QwenImageEditAdapter",
    "QwenImageEditPlusPipeline": "omni.models.qwen_image_edit_plus:QwenImageEditPlusAdapter",
    "ZImagePipeline": "omni.models.z_image:ZImageAdapter",
    "StableDiffusion3Pipeline": "omni.models.sd3:SD3Adapter",
    "Flux2KleinPipeline": "omni.models.flux2:Flux2KleinAdapter",
    "LTXPipeline": "omni.models.ltx:LTXAdapter",
}


def adapter_class(pipeline_class: str) -> type[FamilyAdapter]:
    target = FAMILIES.get(pipeline_class)
    if target is None:
        supported = ", ".join(sorted(FAMILIES))
        raise ModelNotFoundError(
            f"omni has no adapter for {pipeline_class} models; it serves {supported}"
        )
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)
