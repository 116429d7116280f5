"""`stream: true` on /v1/images/generations and /v1/images/edits, read by the openai SDK."""

from __future__ import annotations

from typing import Any

import numpy as np
import openai
import pytest
import requests
from openai import OpenAI
from openai.types import (
    ImageEditCompletedEvent,
    ImageEditPartialImageEvent,
    ImageGenCompletedEvent,
    ImageGenPartialImageEvent,
)

from omni.http import ServerConfig, build_app
from omni.http.openapi import openapi_document
from tests.engine.helpers import assert_same_image
from tests.engine.test_flux_edit import source_image
from tests.http.test_edits import decode, png
from tests.http.test_errors import IMAGES, assert_error_body, assert_still_serving

STEPS = 4
EDITS = "/v1/images/edits"


def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def generate(url: str, **fields: Any) -> Any:
    extra = {"seed": fields.pop("seed", 11), "num_inference_steps": STEPS}
    return client(url).images.generate(
        prompt="a lighthouse at dusk", size="64x64", extra_body=extra, **fields
    )


def edit_image(url: str, **fields: Any) -> Any:
    return client(url).images.edit(
        image=("source.png", png(source_image()), "image/png"),
        prompt="a lighthouse at dusk",
        size="64x64",
        extra_body={"seed": 4, "num_inference_steps": STEPS, "strength": 0.8},
        **fields,
    )


def test_the_sdk_reads_two_partial_images_then_the_completed_one(url: str) -> None:
    events = list(generate(url, stream=True, partial_images=2))

    assert [type(e) for e in events] == [
        ImageGenPartialImageEvent,
        ImageGenPartialImageEvent,
        ImageGenCompletedEvent,
    ]
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    previews = [decode(e.b64_json) for e in events[:2]]
    assert [(p.format, p.size) for p in previews] == [("PNG", (64, 64))] * 2
    completed = events[-1]
    assert (completed.size, completed.output_format) == ("64x64", "png")
    assert completed.usage.output_tokens == (64 // 16) ** 2  # FLUX: a token per 16x16 pixels
    assert completed.usage.total_tokens > completed.usage.output_tokens  # the prompt's too
    final = decode(completed.b64_json)
    assert_same_image(final, decode(generate(url).data[0].b64_json))  # as if not streamed
    for preview in previews:  # predictions of where the picture was going, not the picture
        assert np.abs(np.asarray(preview, np.int16) - np.asarray(final, np.int16)).mean() > 0.5


def test_no_partial_images_streams_only_the_completed_image(url: str) -> None:
    events = list(generate(url, stream=True, partial_images=0, output_format="jpeg"))

    assert [e.type for e in events] == ["image_generation.completed"]
    assert events[0].output_format == "jpeg"
    assert decode(events[0].b64_json).format == "JPEG"


def test_an_edit_streams_image_edit_events(url: str) -> None:
    events = list(edit_image(url, stream=True, partial_images=1))

    assert [type(e) for e in events] == [ImageEditPartialImageEvent, ImageEditCompletedEvent]
    assert events[0].partial_image_index == 0
    assert decode(events[0].b64_json).size == (64, 64)
    usage = events[1].usage
    assert usage.input_tokens_details.image_tokens == usage.output_tokens  # the edited image
    assert_same_image(decode(events[1].b64_json), decode(edit_image(url).data[0].b64_json))


@pytest.mark.parametrize("partial_images", [4, -1])
def test_partial_images_out_of_range_is_refused_naming_the_field(
    url: str, partial_images: int
) -> None:
    body = {"prompt": "a", "stream": True, "partial_images": partial_images}
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=30)
    error = assert_error_body(response, 422)["error"]
    assert error["param"] == "partial_images"
    assert ("<= 3" if partial_images > 0 else ">= 0") in error["message"]

    form = {"prompt": "a", "stream": "true", "partial_images": str(partial_images)}
    files = {"image": ("a.png", png(source_image()), "image/png")}
    response = requests.post(f"{url}{EDITS}", data=form, files=files, timeout=30)
    assert assert_error_body(response, 422)["error"]["param"] == "partial_images"
    assert_still_serving(url)


def test_errors_before_the_stream_starts_are_json(url: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        generate(url, stream=True, n=2)
    assert refused.value.body["param"] == "n" and "n=1" in refused.value.body["message"]

    body = {"prompt": "a", "stream": True, "size": "60x64"}
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=30)
    assert assert_error_body(response, 400)["error"]["param"] == "size"
    assert_still_serving(url)


def test_the_openapi_document_shows_the_event_stream_answers() -> None:
    paths = openapi_document(build_app(ServerConfig()))["paths"]
    for path in (IMAGES, EDITS):
        content = paths[path]["post"]["responses"]["200"]["content"]
        refs = content["text/event-stream"]["schema"]["oneOf"]
        assert [ref["$ref"].rsplit("/", 1)[1] for ref in refs] == [
            "PartialImageEvent",
            "CompletedEvent",
            "ErrorEvent",
        ]
