"""What a request asks for: the `lora` field, one adapter or a stack of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgspec

from omni.errors import InvalidRequestError
from omni.limits import MAX_LORAS_PER_REQUEST, LoraScale


@dataclass(frozen=True, slots=True)
class LoraSpec:
    """One adapter of a request: a registered `name`, or a `local_path` (named for the logs)."""

    name: str | None = None
    local_path: str | None = None
    scale: float = 1.0


class LoraField(msgspec.Struct, forbid_unknown_fields=True):
    """The `lora` field as sent: {"name": ..., "local_path": ..., "scale": 1.0}."""

    name: str | None = None
    local_path: str | None = None
    scale: LoraScale = 1.0


LoraValue = LoraField | list[LoraField]


def lora_specs(value: Any) -> tuple[LoraSpec, ...] | None:
    """The adapters of a `lora` field: an object, a list of them, or either as JSON text (forms).
    None, {} or []: no adapter. Raises InvalidRequestError naming what is wrong."""
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"lora is not valid JSON: {exc}", param="lora") from None
        except RecursionError:
            raise InvalidRequestError("lora nests too deeply to be read", param="lora") from None
    if not value:
        return None
    try:
        fields = msgspec.convert(value, type=LoraValue)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(
            f"lora must be a JSON object {{name, local_path, scale}} or a list of them: {exc}",
            param="lora",
        ) from None
    return specs_of(fields)


def specs_of(value: LoraValue | None) -> tuple[LoraSpec, ...] | None:
    """LoraSpecs from the decoded field; refuses an adapter with neither a name nor a path."""
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_LORAS_PER_REQUEST:
        raise InvalidRequestError(
            f"lora stacks {len(items)} adapters; one request may stack at most "
            f"{MAX_LORAS_PER_REQUEST}",
            param="lora",
        )
    for item in items:
        if not item.name and not item.local_path:
            raise InvalidRequestError(
                "each lora needs a name (one registered with --lora-modules) or a local_path",
                param="lora",
            )
    specs = tuple(LoraSpec(i.name or None, i.local_path or None, i.scale) for i in items)
    return specs or None
