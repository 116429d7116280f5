from __future__ import annotations

import base64
import io
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.http.servers import open_request, server_thread, stats, wait_until
from tests.http.test_errors import IMAGES

NUM_CLIENTS = 16
MANY_STEPS = 200


def batch_sizes_since(before: dict, after: dict) -> Counter[int]:
    counts = Counter({int(k): v for k, v in after["batch_size_counts"].items()})
    counts.subtract({int(k): v for k, v in before["batch_size_counts"].items()})
    return +counts


def test_sixteen_concurrent_clients_all_get_images_from_shared_batches(url: str) -> None:
    before = stats(url)

    def one_client(seed: int) -> requests.Response:
        body = {"prompt": f"a tiny robot number {seed}", "seed": seed, "num_inference_steps": 4}
        return requests.post(f"{url}{IMAGES}", json=body, timeout=120)

    with ThreadPoolExecutor(NUM_CLIENTS) as pool:
        responses = list(pool.map(one_client, range(NUM_CLIENTS)))

    after = stats(url)
    assert [r.status_code for r in responses] == [200] * NUM_CLIENTS
    for response in responses:
        png = base64.b64decode(response.json()["data"][0]["b64_json"])
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert after["num_finished"] - before["num_finished"] == NUM_CLIENTS
    sizes = batch_sizes_since(before, after)
    assert max(sizes) > 1, f"no forward served more than one request: {dict(sizes)}"


def test_a_client_that_disconnects_frees_its_engine_slot(
    tiny_flux_dir: Path, tmp_path: Path
) -> None:
    """Its own server: the shared one may still be finishing other modules' requests."""
    engine = EngineConfig(model=str(tiny_flux_dir))
    with server_thread(ServerConfig(engine=engine, port=0, storage_path=tmp_path)) as server:
        assert_disconnect_aborts(server.url)


def assert_disconnect_aborts(url: str) -> None:
    before = stats(url)
    body = json.dumps({"prompt": "a very slow painting", "num_inference_steps": MANY_STEPS})

    sock = open_request(url, IMAGES, body.encode())
    try:
        wait_until(lambda: stats(url)["num_running"] == 1, 30, "the request to start denoising")
    finally:
        sock.close()
    assert_dropped(url, before, MANY_STEPS)


def assert_dropped(url: str, before: dict, num_steps: int) -> None:
    """The engine aborts the one request of `num_steps` sent since `before`, unfinished."""
    wait_until(
        lambda: (s := stats(url))["num_aborted"] > before["num_aborted"] and s["num_running"] == 0,
        30,
        "the engine to drop the request",
    )
    after = stats(url)
    assert after["num_aborted"] == before["num_aborted"] + 1
    assert after["num_finished"] == before["num_finished"]
    assert after["num_steps_run"] - before["num_steps_run"] < num_steps
