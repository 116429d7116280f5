from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from openai import OpenAI
from PIL import Image

from tests.engine.helpers import assert_same_image
from tests.http.conftest import SERVED_NAME

STEPS = 4


def generate(url: str, **body: Any) -> requests.Response:
    body.setdefault("num_inference_steps", STEPS)
    return requests.post(f"{url}/v1/images/generations", json=body, timeout=120)


def decode(b64_json: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def sdk_images(client: OpenAI, seed: int) -> list[bytes]:
    response = client.images.generate(
        prompt="a lighthouse on a cliff at dusk",
        n=2,
        size="64x64",
        extra_body={"seed": seed, "num_inference_steps": STEPS},
    )
    return [base64.b64decode(image.b64_json) for image in response.data]


def test_openai_sdk_gets_two_pngs_that_repeat_exactly_for_the_same_seed(url: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    first = sdk_images(client, seed=7)
    again = sdk_images(client, seed=7)
    other_seed = sdk_images(client, seed=100)

    assert len(first) == 2
    for png in first:
        image = Image.open(io.BytesIO(png))
        assert (image.format, image.size) == ("PNG", (64, 64))
    assert first == again
    assert first[0] != first[1]  # image 1 used seed 8
    assert other_seed[0] != first[0]
    difference = np.abs(
        np.asarray(Image.open(io.BytesIO(other_seed[0])), dtype=np.int16)
        - np.asarray(Image.open(io.BytesIO(first[0])), dtype=np.int16)
    )
    assert difference.mean() > 1.0


def test_image_i_of_a_seeded_request_is_the_image_of_seed_plus_i(url: str) -> None:
    batch = generate(url, prompt="a paper boat", n=3, seed=40).json()["data"]
    alone = generate(url, prompt="a paper boat", seed=42).json()["data"]

    assert_same_image(decode(alone[0]["b64_json"]), decode(batch[2]["b64_json"]))


def test_response_has_the_openai_shape_plus_size_and_format(url: str) -> None:
    response = generate(url, prompt="a cat", size="64x32", output_format="webp", seed=1)

    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["created"], int)
    assert (body["size"], body["output_format"]) == ("64x32", "webp")
    [item] = body["data"]
    assert item["url"] is None and item["revised_prompt"] is None
    image = decode(item["b64_json"])
    assert (image.format, image.size) == ("WEBP", (64, 32))


@pytest.mark.parametrize(("output_format", "pil_format"), [("jpeg", "JPEG"), ("png", "PNG")])
def test_output_format_sets_the_encoding(url: str, output_format: str, pil_format: str) -> None:
    body = generate(url, prompt="a cat", output_format=output_format, seed=1).json()

    assert decode(body["data"][0]["b64_json"]).format == pil_format


def test_omitted_size_and_steps_use_the_models_serving_defaults(
    url: str, tiny_flux_dir: Path
) -> None:
    defaults = json.loads((tiny_flux_dir / "omni.json").read_text())
    response = requests.post(
        f"{url}/v1/images/generations", json={"prompt": "a cat", "seed": 3}, timeout=120
    )

    assert response.json()["size"] == f"{defaults['width']}x{defaults['height']}"
    image = decode(response.json()["data"][0]["b64_json"])
    assert image.size == (defaults["width"], defaults["height"])


def test_without_a_seed_each_image_gets_its_own(url: str) -> None:
    data = generate(url, prompt="a cat", n=2).json()["data"]

    assert data[0]["b64_json"] != data[1]["b64_json"]


def test_request_id_is_echoed_or_made_and_timings_are_reported(url: str) -> None:
    echoed = generate(url, prompt="a cat", seed=1)
    mine = requests.post(
        f"{url}/v1/images/generations",
        json={"prompt": "a cat", "seed": 1, "num_inference_steps": 1},
        headers={"x-request-id": "client-chosen-42"},
        timeout=120,
    )

    assert mine.headers["x-request-id"] == "client-chosen-42"
    made = {echoed.headers["x-request-id"], generate(url, prompt="a").headers["x-request-id"]}
    assert len(made) == 2
    queue_time = float(echoed.headers["x-queue-time-s"])
    inference_time = float(echoed.headers["x-inference-time-s"])
    assert 0.0 <= queue_time <= inference_time


def test_models_lists_the_served_name_and_health_is_ok(url: str) -> None:
    models = requests.get(f"{url}/v1/models", timeout=10).json()
    health = requests.get(f"{url}/health", timeout=10)

    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == [SERVED_NAME]
    assert models["data"][0]["object"] == "model"
    assert health.status_code == 200
    assert health.json()["model"] == SERVED_NAME
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [SERVED_NAME]


def test_the_served_model_name_is_accepted(url: str) -> None:
    response = generate(url, prompt="a cat", model=SERVED_NAME, seed=1)

    assert response.status_code == 200


def test_priority_is_taken_within_its_bounds_and_does_not_change_the_image(url: str):
    plain = generate(url, prompt="a red fox", size="64x64", seed=11)
    urgent = generate(url, prompt="a red fox", size="64x64", seed=11, priority=-5)
    too_large = generate(url, prompt="a red fox", priority=2**40)

    assert plain.status_code == urgent.status_code == 200, urgent.text
    assert_same_image(
        decode(urgent.json()["data"][0]["b64_json"]), decode(plain.json()["data"][0]["b64_json"])
    )
    assert too_large.status_code == 422
    assert "priority" in json.dumps(too_large.json())


def test_sampler_picks_the_solver_and_an_unknown_one_is_a_400(url: str):
    default = generate(url, prompt="a red fox", size="64x64", seed=3)
    euler = generate(url, prompt="a red fox", size="64x64", seed=3, sampler="euler")
    unipc = generate(url, prompt="a red fox", size="64x64", seed=3, sampler="unipc")
    unknown = generate(url, prompt="a red fox", sampler="ddim")

    assert default.status_code == euler.status_code == unipc.status_code == 200, unipc.text
    image_of = lambda response: decode(response.json()["data"][0]["b64_json"])  # noqa: E731
    assert_same_image(image_of(euler), image_of(default))  # the model's own scheduler is Euler
    assert (
        np.abs(np.asarray(image_of(unipc), float) - np.asarray(image_of(euler), float)).mean() > 0.5
    )
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["param"] == "sampler" and "dpm++2m, euler, unipc" in error["message"]


def test_cache_field_skips_steps_reports_them_and_refuses_bad_values(url: str):
    spec = {"type": "fbcache", "threshold": 0.5}
    cached = generate(url, prompt="a red fox", size="64x64", seed=3, num_inference_steps=12,
                      cache=spec)  # fmt: skip
    plain = generate(url, prompt="a red fox", size="64x64", seed=3, num_inference_steps=12)
    unknown = generate(url, prompt="a red fox", cache="teacache")
    out_of_range = generate(url, prompt="a red fox", cache={"type": "fbcache", "threshold": -1})
    misspelt = generate(url, prompt="a red fox", cache={"kind": "fbcache"})

    assert cached.status_code == plain.status_code == 200, cached.text
    assert 0 < int(cached.headers["x-cache-skipped-steps"]) < 12
    assert "x-cache-skipped-steps" not in plain.headers  # the server's default is no cache
    for refused in (unknown, out_of_range):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "cache"
    assert misspelt.status_code == 422 and "cache" in misspelt.text


def test_taylorseer_predicts_on_its_schedule_and_takes_no_threshold(url: str):
    cached = generate(url, prompt="a red fox", size="64x64", num_inference_steps=12,
                      cache="taylorseer")  # fmt: skip
    with_threshold = generate(url, prompt="a red fox", cache={"type": "taylorseer", "threshold": 1})

    assert cached.status_code == 200, cached.text
    # diffusers' schedule: steps 0-2 in full, then every 5th (4 and 9): 7 of 12 predicted
    assert cached.headers["x-cache-skipped-steps"] == "7"
    assert with_threshold.status_code == 400
    assert with_threshold.json()["error"]["param"] == "cache"
