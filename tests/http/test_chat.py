"""POST /v1/chat/completions through the official `openai` SDK and plain HTTP."""

from __future__ import annotations

import base64
import io

import pytest
import requests
from openai import OpenAI
from PIL import Image

from tests.engine.helpers import assert_same_image


def data_url_image(url: str) -> Image.Image:
    header, _, payload = url.partition(",")
    assert header == "data:image/png;base64"
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


@pytest.fixture
def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_the_sdk_gets_an_image_part_equal_to_the_images_api(client: OpenAI, url: str):
    fields = {"size": "48x32", "seed": 5, "num_inference_steps": 4}
    answer = client.chat.completions.create(
        model="tiny-flux",
        messages=[
            {"role": "system", "content": "you draw"},
            {"role": "user", "content": [{"type": "text", "text": "a red fox in the snow"}]},
        ],
        extra_body=fields,
    )
    parts = answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "stop" and len(parts) == 1
    image = data_url_image(parts[0]["image_url"]["url"])
    assert image.size == (48, 32)
    direct = requests.post(
        f"{url}/v1/images/generations",
        json={"prompt": "a red fox in the snow", **fields},
        timeout=60,
    ).json()["data"][0]["b64_json"]
    assert_same_image(image, Image.open(io.BytesIO(base64.b64decode(direct))))


def test_bad_chat_requests_are_400_or_422(url: str):
    def post(**body):
        return requests.post(f"{url}/v1/chat/completions", json=body, timeout=60)

    def with_image(image_url: str) -> requests.Response:
        return post(messages=[{"role": "user", "content": [
            {"type": "text", "text": "make it blue"},
            {"type": "image_url", "image_url": {"url": image_url}},
        ]}])  # fmt: skip

    no_user = post(messages=[{"role": "system", "content": "hi"}])
    not_an_image = with_image("data:image/png;base64,AAAA")
    remote = with_image("https://example.com/fox.png")
    empty = post(messages=[{"role": "user", "content": "  "}])
    misspelt = post(messages=[{"role": "user", "content": "a fox"}], num_inference_step=3)
    strength_alone = post(messages=[{"role": "user", "content": "a fox"}], strength=0.5)
    for response in (no_user, not_an_image, remote, empty):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "messages"
    assert "fetches no URLs" in remote.json()["error"]["message"]
    assert misspelt.status_code == 422 and "num_inference_step" in misspelt.text
    assert strength_alone.status_code == 400


def test_an_image_part_edits_it_as_the_edits_route_does(url: str):
    source = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(source, format="PNG")
    png = source.getvalue()
    fields = {"seed": 3, "num_inference_steps": 4, "strength": 0.7}
    answer = requests.post(
        f"{url}/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "a red fox"},
                {"type": "image_url", "image_url": {
                    "url": "data:image/png;base64," + base64.b64encode(png).decode()}},
            ]}],
            **fields,
        },
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    part = answer.json()["choices"][0]["message"]["content"][0]
    image = data_url_image(part["image_url"]["url"])
    assert image.size == (64, 48)
    edited = requests.post(
        f"{url}/v1/images/edits",
        data={"prompt": "a red fox", **{k: str(v) for k, v in fields.items()}},
        files={"image": ("in.png", png, "image/png")},
        timeout=60,
    )
    assert edited.status_code == 200, edited.text
    direct = Image.open(io.BytesIO(base64.b64decode(edited.json()["data"][0]["b64_json"])))
    assert_same_image(image, direct)
