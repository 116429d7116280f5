"""The Videos API's frame-interpolation fields, as vLLM-Omni takes them, checked into one spec.

`enable_frame_interpolation=true` turns it on; `frame_interpolation_exp` (default 1) makes
(N - 1) * 2**exp + 1 frames of N at 2**exp times the fps, `frame_interpolation_scale` (default
1.0) is RIFE's flow-estimation scale, and `frame_interpolation_model_path` names the RIFE
weights (a directory inside --frame-interpolation-dir). The other three without the first are
refused rather than ignored. (The schema bounds exp and scale: omni.limits.)
"""

from __future__ import annotations

from pathlib import Path

from omni.errors import InvalidRequestError
from omni.interpolation.weights import WEIGHTS_FILE, resolve_model
from omni.models.base import ModelInfo
from omni.request import FrameInterpolation

SETTINGS = (
    "frame_interpolation_exp",
    "frame_interpolation_scale",
    "frame_interpolation_model_path",
)


def frame_interpolation(
    enabled: bool | None,
    exp: int | None,
    scale: float | None,
    model_path: str | None,
    info: ModelInfo,
    root: Path | None,
) -> FrameInterpolation | None:
    """The interpolation a request asks for, or None; InvalidRequestError (400) naming a field."""
    if not enabled:  # false is the same as leaving it out
        given = [
            name
            for name, value in zip(SETTINGS, (exp, scale, model_path), strict=True)
            if value is not None
        ]
        if given:
            raise InvalidRequestError(
                f"{given[0]} only applies with enable_frame_interpolation=true", param=given[0]
            )
        return None
    settings = {
        name: value for name, value in (("exp", exp), ("scale", scale)) if value is not None
    }
    model = model_path if model_path is not None else default_model(info, root)
    return FrameInterpolation(model=resolve_model(model, root), **settings)


def default_model(info: ModelInfo, root: Path | None) -> str:
    """The allow-list root's own flownet.pkl when it has one, else the model's default."""
    if root is not None and (root / WEIGHTS_FILE).is_file():
        return str(root)
    if info.default_frame_interpolation_model is not None:
        return info.default_frame_interpolation_model
    raise InvalidRequestError(
        f"{info.name} has no default interpolation model: give frame_interpolation_model_path, "
        f"a directory inside --frame-interpolation-dir that holds RIFE's {WEIGHTS_FILE}",
        param="frame_interpolation_model_path",
    )
