"""Which RIFE a request may use, and loading its `flownet.pkl`: local files only, never fetched.

A model is a directory holding `flownet.pkl` inside the server's allow-list root
(`--frame-interpolation-dir`), or the built-in `omni-tiny-rife`. Released checkpoints were saved
from a DataParallel wrapper, so every key starts with `module.`, and RIFE 4.22.lite's also carries
its training-only `teacher.` and `caltime.` branches; those are dropped, and the rest must match
IFNet exactly (`strict=True`): a checkpoint of another RIFE version is refused, not half loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from omni.errors import InvalidRequestError
from omni.interpolation.ifnet import IFNet
from omni.models.tiny.rife import TINY_RIFE, build_tiny_rife

WEIGHTS_FILE = "flownet.pkl"
PARAM = "frame_interpolation_model_path"
DATA_PARALLEL_PREFIX = "module."
TRAINING_ONLY_PREFIXES = ("teacher.", "caltime.")
BUILTIN_MODELS = (TINY_RIFE,)


def resolve_model(given: str, root: Path | None) -> str:
    """The model a request names, as the absolute directory to load; 400 naming the field.

    A relative path is taken inside `root`; symbolic links are followed before the check, so
    none leads out of it.
    """
    if given in BUILTIN_MODELS:
        return given
    if root is None:
        raise InvalidRequestError(
            f"{PARAM} {given!r} is refused: this server takes no interpolation model paths "
            f"(start it with --frame-interpolation-dir); the built-in model is {TINY_RIFE}",
            param=PARAM,
        )
    base = root.resolve()
    try:
        directory = (base / given).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a link loop, a NUL byte
        raise InvalidRequestError(f"{PARAM} {given!r} is not a usable path: {exc}", PARAM) from None
    if not directory.is_relative_to(base):
        raise InvalidRequestError(
            f"{PARAM} {given!r} is outside this server's --frame-interpolation-dir", param=PARAM
        )
    if not (directory / WEIGHTS_FILE).is_file():
        raise InvalidRequestError(
            f"{PARAM} {given!r} has no {WEIGHTS_FILE} (a directory holding RIFE 4.22.lite's "
            "weights is expected)",
            param=PARAM,
        )
    return str(directory)


def load_model(model: str) -> IFNet:
    """The IFNet for a resolved model name, on the CPU in eval mode; 400 if it does not load."""
    if model == TINY_RIFE:
        return build_tiny_rife()
    path = Path(model) / WEIGHTS_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling fails in many ways; all mean "not a state dict"
        raise InvalidRequestError(
            f"{path} could not be read as a state dict: {exc}", PARAM
        ) from None
    net = IFNet()
    try:
        net.load_state_dict(inference_state(state), strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidRequestError(
            f"{path} is not a RIFE 4.22.lite IFNet checkpoint: {exc}", PARAM
        ) from None
    return net.eval()


def inference_state(state: object) -> dict[str, torch.Tensor]:
    """A checkpoint's IFNet weights: `module.` taken off, training-only branches dropped."""
    if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
        raise ValueError(f"expected a mapping of names to tensors, got {type(state).__name__}")
    prefixed = [key.startswith(DATA_PARALLEL_PREFIX) for key in state]
    if any(prefixed) and not all(prefixed):
        raise ValueError("some keys have the module. prefix and some do not")
    names = {key: key.removeprefix(DATA_PARALLEL_PREFIX) for key in state}
    return {
        names[key]: value
        for key, value in state.items()
        if not names[key].startswith(TRAINING_ONLY_PREFIXES)
    }
