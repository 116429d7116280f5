"""Wan's request resolution: a request's fields checked against the loaded model and filled
from its serving defaults (sides and frame counts rounded to what the model makes)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from omni.errors import InvalidRequestError
from omni.limits import MAX_FLOW_SHIFT, MAX_FPS, MAX_GUIDANCE, MIN_FLOW_SHIFT
from omni.models.wan_i2v import check_image
from omni.models.wan_rules import check_range, first, nearest_multiple, valid_num_frames
from omni.request import GenerationParams

if TYPE_CHECKING:
    from omni.models.wan import WanAdapter


def resolve_params(adapter: WanAdapter, params: GenerationParams) -> GenerationParams:
    if params.true_cfg_scale is not None:
        raise InvalidRequestError(
            f"true_cfg_scale is not supported by {adapter.name}: Wan's guidance_scale is "
            "already true classifier-free guidance with the negative prompt",
            param="true_cfg_scale",
        )
    adapter.check_fields(params)
    params = replace(
        params,
        width=nearest_multiple(params.width, adapter.size_multiple),
        height=nearest_multiple(params.height, adapter.size_multiple),
    )
    params = adapter.check_common(params)
    check_image(adapter.name, adapter.is_image_to_video, params.image)
    check_experts(adapter.name, adapter.has_two_experts, params)
    d = adapter.defaults
    num_frames = first(params.num_frames, d.num_frames)
    fps = first(params.fps, d.fps)
    flow_shift = first(params.flow_shift, adapter.flow_shift)
    guidance = first(params.guidance_scale, d.guidance_scale)
    guidance_2 = ratio = None
    if adapter.has_two_experts:
        guidance_2 = first(params.guidance_scale_2, d.guidance_scale_2, guidance)
        ratio = first(params.boundary_ratio, adapter.default_boundary_ratio)
        check_range("guidance_scale_2", guidance_2, 0, MAX_GUIDANCE)
        if ratio is not None:
            check_range("boundary_ratio", ratio, 0, 1)
    check_range("num_frames", num_frames, 1, adapter.max_num_frames)
    check_range("fps", fps, 1, MAX_FPS)
    check_range("flow_shift", flow_shift, MIN_FLOW_SHIFT, MAX_FLOW_SHIFT)
    check_range("guidance_scale", guidance, 0, MAX_GUIDANCE)
    return replace(
        params,
        width=params.width or d.width,
        height=params.height or d.height,
        num_inference_steps=params.num_inference_steps or d.num_inference_steps,
        num_frames=valid_num_frames(num_frames, adapter.temporal),
        fps=fps,
        flow_shift=flow_shift,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        boundary_ratio=ratio,
    )


def check_experts(name: str, has_two_experts: bool, params: GenerationParams) -> None:
    for field in ("guidance_scale_2", "boundary_ratio"):
        if getattr(params, field) is not None and not has_two_experts:
            raise InvalidRequestError(
                f"{field} needs a model with two experts (Wan2.2 A14B); {name} has one",
                param=field,
            )
