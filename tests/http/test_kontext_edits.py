"""/v1/images/edits on a FLUX.1 Kontext server, through the openai SDK: streamed and not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from openai import OpenAI

from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.engine.helpers import assert_same_image
from tests.engine.test_flux_edit import source_image
from tests.http.servers import ServerThread, server_thread
from tests.http.test_edits import alpha_mask, check_400, decode, edit, png


@pytest.fixture(scope="module")
def kontext_url(
    tiny_flux_kontext_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    engine = EngineConfig(model=str(tiny_flux_kontext_dir), profile_seconds=0)
    storage = tmp_path_factory.mktemp("kontext-storage")
    server: ServerThread
    with server_thread(ServerConfig(engine=engine, port=0, storage_path=storage)) as server:
        yield server.url


def test_the_sdk_edits_with_kontext_streamed_or_not(kontext_url: str) -> None:
    client = OpenAI(base_url=f"{kontext_url}/v1", api_key="unused", max_retries=0)
    fields = dict(
        image=("source.png", png(source_image()), "image/png"),
        prompt="make it night",
        extra_body={"seed": 5, "num_inference_steps": 2},
    )
    plain = client.images.edit(**fields)
    events = list(client.images.edit(**fields, stream=True, partial_images=1))

    assert plain.size == "64x64"  # the image's own size
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert_same_image(decode(events[-1].b64_json), decode(plain.data[0].b64_json))


def test_kontext_takes_no_mask_or_strength(kontext_url: str) -> None:
    image = ("image", ("a.png", png(source_image()), "image/png"))
    mask = ("mask", ("m.png", alpha_mask(), "image/png"))
    check_400(edit(kontext_url, [image, mask]), "mask", "not supported")
    check_400(edit(kontext_url, [image], strength="0.5"), "strength", "not supported")
    body = {"prompt": "a fox", "num_inference_steps": 2, "size": "32x32", "seed": 1}
    generated = requests.post(f"{kontext_url}/v1/images/generations", json=body, timeout=120)
    assert generated.status_code == 200, generated.text  # no image: text-to-image
