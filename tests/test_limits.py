"""Every number a client sends has a bound, and each bound is defined once (omni/limits.py)."""

from __future__ import annotations

from typing import Annotated, get_args, get_origin

import msgspec
import pytest

from omni.http.schemas import ImageGenerationRequest
from omni.http.video_fields import VideoRequest


def numeric_members(annotation: object) -> list[object]:
    members = get_args(annotation) if get_args(annotation) else (annotation,)
    return [
        m for m in members if (get_args(m)[0] if get_origin(m) is Annotated else m) in (int, float)
    ]


@pytest.mark.parametrize("schema", [ImageGenerationRequest, VideoRequest])
def test_every_numeric_field_of_a_request_schema_has_both_bounds(schema: type) -> None:
    unbounded = []
    for field in msgspec.structs.fields(schema):
        for member in numeric_members(field.type):
            metas = get_args(member)[1:] if get_origin(member) is Annotated else ()
            has_low = any(m.ge is not None or m.gt is not None for m in metas)
            has_high = any(m.le is not None or m.lt is not None for m in metas)
            if not (has_low and has_high):
                unbounded.append(field.name)

    assert unbounded == []
