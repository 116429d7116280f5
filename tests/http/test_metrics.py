"""GET /metrics on a real server: Prometheus text whose counters move by what was asked.

The server runs in a thread with its own registry and an API key, so the counts are exact.
"""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from omni.config import EngineConfig
from omni.http import ServerConfig
from tests.http.servers import ServerThread, server_thread, wait_until

KEY = "sk-metrics"
AUTH = {"Authorization": f"Bearer {KEY}"}
NAME = "tiny-metrics"
IMAGES = "/v1/images/generations"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def server(tiny_flux_dir: Path) -> Iterator[ServerThread]:
    engine = EngineConfig(model=str(tiny_flux_dir), served_model_name=NAME, profile_seconds=0)
    storage = Path(tempfile.mkdtemp(prefix="omni-test-metrics-"))
    config = ServerConfig(engine=engine, port=0, storage_path=storage, api_key=KEY)
    with server_thread(config) as running:
        yield running


def scrape(url: str) -> Samples:
    response = requests.get(f"{url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `omni:<name>` with exactly these labels besides model_name; 0 if absent."""
    key = (f"omni:{name}", frozenset({"model_name": NAME, **labels}.items()))
    return samples.get(key, 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_metrics_asks_for_the_api_key_like_stats(server: ServerThread) -> None:
    missing = requests.get(f"{server.url}/metrics", timeout=10)
    wrong = requests.get(f"{server.url}/metrics", headers={"Authorization": "Bearer x"}, timeout=10)
    stats = requests.get(f"{server.url}/v1/stats", timeout=10)
    assert (missing.status_code, wrong.status_code, stats.status_code) == (401, 401, 401)
    assert scrape(server.url)  # with the key


def test_every_series_carries_the_model_name(server: ServerThread) -> None:
    samples = scrape(server.url)
    ours = [(name, dict(labels)) for name, labels in samples if name.startswith("omni:")]
    names = {name for name, _ in ours}
    assert {"omni:num_requests_running", "omni:num_requests_waiting"} <= names
    assert "omni:e2e_request_latency_seconds_bucket" in names
    assert all(labels.get("model_name") == NAME for _, labels in ours), ours


def test_three_images_of_four_steps_and_a_refusal_move_the_counters(server: ServerThread) -> None:
    before = scrape(server.url)
    body = {"prompt": "a cat", "n": 3, "size": "64x32", "num_inference_steps": 4, "seed": 1}
    ok = requests.post(f"{server.url}{IMAGES}", json=body, headers=AUTH, timeout=120)
    refused = requests.post(
        f"{server.url}{IMAGES}", json={**body, "output_format": "bmp"}, headers=AUTH, timeout=30
    )
    missing = requests.get(f"{server.url}/v1/videos/video_nope", headers=AUTH, timeout=10)
    after = scrape(server.url)

    assert ok.status_code == 200, ok.text
    assert refused.status_code == 422, refused.text
    assert moved(before, after, "request_success_total", finished_reason="finished") == 3
    assert moved(before, after, "request_success_total", finished_reason="failed") == 0
    assert moved(before, after, "steps_per_request_count") == 3
    assert moved(before, after, "steps_per_request_sum") == 12
    assert moved(before, after, "output_pixels_sum") == 3 * 64 * 32
    for name in ("e2e_request_latency", "request_queue_time", "request_inference_time"):
        assert moved(before, after, f"{name}_seconds_count") == 3, name
        assert moved(before, after, f"{name}_seconds_sum") > 0, name
    # Every forward counts its requests: 3 images x 4 steps, however they were batched.
    assert moved(before, after, "step_batch_size_sum") == 12
    forwards = moved(before, after, "step_batch_size_count")
    assert 4 <= forwards <= 12
    assert moved(before, after, "denoise_step_seconds_count") == forwards
    assert moved(before, after, "vae_decode_seconds_count") >= 1
    http = "http_requests_total"
    assert moved(before, after, http, method="POST", route=IMAGES, status="200") == 1
    assert moved(before, after, http, method="POST", route=IMAGES, status="422") == 1
    # The route's pattern, never the raw URL: ids do not become series.
    video = {"method": "GET", "route": "/v1/videos/{video_id}", "status": "404"}
    assert missing.status_code == 404
    assert moved(before, after, http, **video) == 1
    assert not any("video_nope" in str(labels) for _, labels in after)
    assert moved(before, after, http, method="GET", route="/metrics", status="200") == 1


def test_a_disconnected_request_counts_as_aborted(server: ServerThread) -> None:
    before = scrape(server.url)
    body = json.dumps({"prompt": "a slow cat", "num_inference_steps": 1000}).encode()
    held = open_request_with_key(server.url, body)
    try:
        wait_until(
            lambda: value(scrape(server.url), "num_requests_running") == 1, 30, "a running request"
        )
    finally:
        held.close()
    wait_until(
        lambda: (
            moved(before, scrape(server.url), "request_success_total", finished_reason="aborted")
            == 1
        ),
        60,
        "the abort to be counted",
    )
    after = scrape(server.url)
    assert value(after, "num_requests_running") == 0
    assert moved(before, after, "request_success_total", finished_reason="finished") == 0


def open_request_with_key(url: str, body: bytes) -> socket.socket:
    """A POST left unread, with the key: closing the socket is a disconnect."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        f"POST {IMAGES} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock
