"""A streamed request inside the engine: it shares forwards with plain ones without changing
them, its client leaving aborts it, and a failure after the first event is an SSE error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.engine.helpers import assert_same_image
from tests.http.servers import ServerThread, open_request, server_thread, stats
from tests.http.test_concurrency import assert_dropped, batch_sizes_since
from tests.http.test_edits import decode
from tests.http.test_errors import IMAGES, assert_still_serving

STREAM_STEPS = 60
PLAIN_STEPS = 4


@pytest.fixture(scope="module")
def server(tiny_flux_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Its own server: counting forwards needs nobody else's requests, and no start-up profile
    (its token budget could keep requests out of each other's forwards)."""
    engine = EngineConfig(model=str(tiny_flux_dir), profile_seconds=0)
    storage = tmp_path_factory.mktemp("stream-storage")
    with server_thread(ServerConfig(engine=engine, port=0, storage_path=storage)) as server:
        yield server


def plain_image(url: str, seed: int) -> Any:
    body = {"prompt": f"a boat {seed}", "seed": seed, "num_inference_steps": PLAIN_STEPS}
    response = requests.post(f"{url}{IMAGES}", json={**body, "size": "64x64"}, timeout=120)
    assert response.status_code == 200, response.text
    return decode(response.json()["data"][0]["b64_json"])


def partial_images_metric(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    families = text_string_to_metric_families(text)
    return next(f for f in families if f.name == "omni:partial_images").samples[0].value


def test_a_stream_shares_its_forwards_and_leaves_other_results_alone(server: ServerThread):
    url = server.url
    alone = [plain_image(url, seed) for seed in (1, 2)]
    before, metric_before = stats(url), partial_images_metric(url)
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    # The SDK returns once the answer has started: after the stream's first denoising step.
    stream = client.images.generate(
        prompt="a lighthouse",
        size="64x64",
        stream=True,
        partial_images=3,
        extra_body={"seed": 9, "num_inference_steps": STREAM_STEPS},
    )
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda seed: plain_image(url, seed), (1, 2)))
    events = list(stream)

    after = stats(url)
    assert [e.type for e in events] == ["image_generation.partial_image"] * 3 + [
        "image_generation.completed"
    ]
    assert after["num_finished"] - before["num_finished"] == 3
    # Every forward of the plain requests was one of the stream's: they ran inside its run.
    assert after["num_steps_run"] - before["num_steps_run"] == STREAM_STEPS
    assert max(batch_sizes_since(before, after)) >= 2
    assert after["num_previews"] - before["num_previews"] == 3
    assert partial_images_metric(url) - metric_before == 3
    for shared, single in zip(together, alone, strict=True):
        assert_same_image(shared, single)


def test_a_client_that_leaves_mid_stream_aborts_its_request(server: ServerThread) -> None:
    url = server.url
    before = stats(url)
    body = {"prompt": "a long painting", "stream": True, "partial_images": 3}
    sock = open_request(url, IMAGES, json.dumps({**body, "num_inference_steps": 1000}).encode())
    try:
        head = sock.recv(65536).decode("latin-1")  # sent with the first step's events
        assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head, head
    finally:
        sock.close()
    assert_dropped(url, before, 1000)
    assert_still_serving(url)


def test_a_failure_after_the_stream_started_is_an_error_event(server: ServerThread) -> None:
    """The final decode fails (a fault put into the real adapter): the stream has started, so
    the failure comes as an SSE `error` event, which the SDK raises as an APIError."""
    adapter = server.server.engine._engine.adapter

    def failing_decode(requests: list[Any]) -> list[Any]:
        raise RuntimeError("the VAE caught fire")

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    adapter.decode = failing_decode
    try:
        stream = client.images.generate(
            prompt="a", size="64x64", stream=True, extra_body={"num_inference_steps": 2}
        )
        with pytest.raises(openai.APIError, match="the VAE caught fire"):
            list(stream)
    finally:
        del adapter.decode  # the class's own again
    assert_still_serving(server.url)
