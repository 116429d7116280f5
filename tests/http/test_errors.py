"""Every error status: both body shapes (OpenAI's envelope and the seed's detail), then a PNG."""

from __future__ import annotations

from typing import Any

import openai
import pytest
import requests
from aiohttp.test_utils import make_mocked_request
from openai import OpenAI

from omni.http import ServerConfig, build_app
from omni.http.errors import to_api_error
from tests.http.conftest import MAX_BODY_BYTES, SERVED_NAME

IMAGES = "/v1/images/generations"


def assert_error_body(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["x-request-id"]
    body = response.json()
    assert set(body) == {"error", "detail"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    assert "Traceback" not in response.text
    if status == 422:
        assert isinstance(body["detail"], list) and body["detail"]
        for issue in body["detail"]:
            assert set(issue) == {"loc", "msg", "type"}
            assert issue["loc"][0] == "body"
    else:
        assert body["detail"] == error["message"]
    return body


def assert_still_serving(url: str, **headers: str) -> None:
    response = requests.post(
        f"{url}{IMAGES}",
        json={"prompt": "still here", "num_inference_steps": 1, "seed": 0},
        headers=headers,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["b64_json"].startswith("iVBOR")  # base64 of a PNG header


SCHEMA_ERRORS = [
    ({"size": "64x64"}, ["body", "prompt"], "value_error.missing"),
    ({"prompt": 42}, ["body", "prompt"], "type_error"),
    ({"prompt": "a", "n": 0}, ["body", "n"], "value_error"),
    ({"prompt": "a", "n": 11}, ["body", "n"], "value_error"),
    ({"prompt": "a", "n": "two"}, ["body", "n"], "type_error"),
    ({"prompt": "a", "size": "1024"}, ["body", "size"], "value_error"),
    ({"prompt": "a", "response_format": "url"}, ["body", "response_format"], "value_error"),
    ({"prompt": "a", "output_format": "gif"}, ["body", "output_format"], "value_error"),
    ({"prompt": "a", "num_inference_steps": 1001}, ["body", "num_inference_steps"], "value_error"),
    ({"prompt": "a", "guidance_scale": 100.5}, ["body", "guidance_scale"], "value_error"),
    ({"prompt": "a", "seed": -1}, ["body", "seed"], "value_error"),
    ({"prompt": "a", "seed": True}, ["body", "seed"], "type_error"),
    ({"prompt": "a", "num_inference_step": 4}, ["body", "num_inference_step"], "value_error.extra"),
    ({"prompt": "a", "output_compression": 101}, ["body", "output_compression"], "value_error"),
    ([{"prompt": "a"}], ["body"], "type_error"),
]


@pytest.mark.parametrize(("body", "loc", "error_type"), SCHEMA_ERRORS)
def test_schema_errors_are_422_with_a_detail_list(
    url: str, body: Any, loc: list[str], error_type: str
) -> None:
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=30)

    detail = assert_error_body(response, 422)["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(loc, error_type)]
    assert_still_serving(url)


def test_a_missing_prompt_reads_like_the_seed_documents(url: str) -> None:
    response = requests.post(f"{url}{IMAGES}", json={}, timeout=30)

    body = assert_error_body(response, 422)
    assert body["detail"] == [
        {"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}
    ]
    assert body["error"]["param"] == "prompt"


SEMANTIC_ERRORS = [
    ({"prompt": "a", "size": "1024x"}, "size", "Invalid size format: '1024x'"),
    ({"prompt": "a", "size": "0x512"}, "size", "0x512"),
    ({"prompt": "a", "size": "60x64"}, "size", "multiple"),
    ({"prompt": "a", "size": "64x99999"}, "size", "out of range"),
    ({"prompt": "a", "model": "dall-e-3"}, "model", "dall-e-3"),
    ({"prompt": "   "}, "prompt", "empty"),
    ({"prompt": "a", "seed": 2**63 - 1, "n": 2}, "seed", "seed 9223372036854775807 with n=2"),
    ({"prompt": "a", "seed": 2**63 - 3, "n": 4}, "seed", "at most 9223372036854775804"),
]


def test_the_largest_seeds_that_fit_n_images_are_served(url: str) -> None:
    body = {"prompt": "a", "seed": 2**63 - 2, "n": 2, "num_inference_steps": 1, "size": "16x16"}
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=60)

    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 2


@pytest.mark.parametrize(("body", "param", "says"), SEMANTIC_ERRORS)
def test_semantic_errors_are_400(url: str, body: dict[str, Any], param: str, says: str) -> None:
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=30)

    error = assert_error_body(response, 400)["error"]
    assert error["param"] == param
    assert says in error["message"]
    assert_still_serving(url)


@pytest.mark.parametrize("raw", [b"{not json", b"", b'{"prompt": "a"'])
def test_a_body_that_is_not_json_is_400(url: str, raw: bytes) -> None:
    response = requests.post(
        f"{url}{IMAGES}", data=raw, headers={"Content-Type": "application/json"}, timeout=30
    )

    assert assert_error_body(response, 400)["error"]["code"] == "invalid_json"
    assert_still_serving(url)


def test_an_oversized_body_is_413(url: str) -> None:
    response = requests.post(f"{url}{IMAGES}", json={"prompt": "x" * MAX_BODY_BYTES}, timeout=30)

    assert str(MAX_BODY_BYTES) in assert_error_body(response, 413)["error"]["message"]
    assert_still_serving(url)


def test_a_body_at_the_limit_is_read(url: str) -> None:
    body = b'{"prompt": "a cat", "size": "1024"}'
    body = body[:-1] + b" " * (MAX_BODY_BYTES - len(body)) + b"}"
    response = requests.post(
        f"{url}{IMAGES}", data=body, headers={"Content-Type": "application/json"}, timeout=30
    )

    assert_error_body(response, 422)  # parsed, then refused for the size without an "x"


def test_unknown_routes_and_methods_get_the_error_body(url: str) -> None:
    missing = requests.get(f"{url}/v1/nothing-here", timeout=10)
    wrong_method = requests.get(f"{url}{IMAGES}", timeout=10)

    assert_error_body(missing, 404)
    assert_error_body(wrong_method, 405)
    assert "POST" in wrong_method.headers["Allow"]
    assert_still_serving(url)


def test_the_openai_sdk_reads_the_envelope(url: str) -> None:
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    with pytest.raises(openai.BadRequestError) as bad_model:
        client.images.generate(prompt="a cat", model="dall-e-3", size="64x64")
    with pytest.raises(openai.UnprocessableEntityError) as too_many:
        client.images.generate(prompt="a cat", n=11)

    assert (bad_model.value.code, bad_model.value.param) == ("model_not_found", "model")
    assert SERVED_NAME in bad_model.value.message
    assert too_many.value.param == "n"


def test_an_unexpected_exception_is_a_500_that_keeps_its_details_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = make_mocked_request("POST", IMAGES, app=build_app(ServerConfig(port=0)))

    error = to_api_error(request, KeyError("a secret detail"))

    assert (error.status, error.code) == (500, "internal_error")
    assert "a secret detail" not in error.message
    assert "a secret detail" in caplog.text


def test_openai_fields_omni_has_no_use_for_are_accepted(url: str) -> None:
    """They pick among OpenAI's own models' options; an OpenAI client may send them."""
    body = {
        "prompt": "a",
        "num_inference_steps": 1,
        "size": "16x16",
        "quality": "high",
        "style": "vivid",
        "background": "auto",
        "moderation": "low",
        "output_compression": 80,
        "partial_images": 0,
        "safety_identifier": "user-17",
        "stream": False,
    }
    response = requests.post(f"{url}{IMAGES}", json=body, timeout=60)

    assert response.status_code == 200, response.text
