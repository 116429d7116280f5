"""API keys, and the answers while the engine loads, after it died, when full, when a run fails.

Each test runs its own server in a thread, with the config the situation needs.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import requests
from openai import OpenAI
from PIL import Image

import omni.engine.engine
from omni.config import EngineConfig
from omni.http import ServerConfig
from omni.models.flux import FluxAdapter
from omni.request import GenerationParams
from tests.http.servers import is_healthy, open_request, server_thread, stats, wait_until
from tests.http.test_errors import IMAGES, assert_error_body, assert_still_serving


def config(model: Path, **server: Any) -> ServerConfig:
    engine = server.pop("engine", {})
    server.setdefault("storage_path", Path(tempfile.mkdtemp(prefix="omni-test-storage-")))
    return ServerConfig(engine=EngineConfig(model=str(model), **engine), port=0, **server)


def post_image(url: str, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    body = {"prompt": "a cat", "num_inference_steps": 1, **body}
    return requests.post(f"{url}{IMAGES}", json=body, headers=headers, timeout=60)


def test_an_api_key_guards_every_v1_route_but_not_health(tiny_flux_dir: Path) -> None:
    key = "sk-test-key"
    with server_thread(config(tiny_flux_dir, api_key=key)) as server:
        missing = post_image(server.url)
        wrong = post_image(server.url, headers={"Authorization": "Bearer sk-wrong"})
        garbled = requests.get(  # bytes that are not UTF-8: refused, not a 500
            f"{server.url}/v1/models", headers={"Authorization": b"Bearer sk-\xff\xfe"}, timeout=10
        )
        models_missing = requests.get(f"{server.url}/v1/models", timeout=10)
        health = requests.get(f"{server.url}/health", timeout=10)
        right = post_image(server.url, headers={"Authorization": f"Bearer {key}"})
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{server.url}/v1", api_key="sk-wrong", max_retries=0).models.list()
        sdk = OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        listed = [m.id for m in sdk.models.list()]

    assert assert_error_body(missing, 401)["error"]["code"] == "missing_api_key"
    assert assert_error_body(wrong, 401)["error"]["code"] == "invalid_api_key"
    assert assert_error_body(garbled, 401)["error"]["code"] == "invalid_api_key"
    assert_error_body(models_missing, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert health.status_code == 200
    assert right.status_code == 200
    assert listed == [str(tiny_flux_dir)]


def test_while_the_model_loads_health_and_images_are_503_then_200(
    tiny_flux_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load_model = omni.engine.engine.load_model

    def load_when_released(*args: Any) -> Any:
        release.wait(60)
        return real_load_model(*args)

    monkeypatch.setattr(omni.engine.engine, "load_model", load_when_released)
    with server_thread(config(tiny_flux_dir), wait_healthy=False) as server:
        health = requests.get(f"{server.url}/health", timeout=10)
        image = post_image(server.url)
        models = requests.get(f"{server.url}/v1/models", timeout=10)
        release.set()
        wait_until(lambda: requests.get(f"{server.url}/health").ok, 60, "the model to load")
        after = post_image(server.url)

    assert "loading" in assert_error_body(health, 503)["error"]["message"]
    assert "loading" in assert_error_body(image, 503)["error"]["message"]
    assert models.status_code == 200
    assert after.status_code == 200


def test_a_model_that_fails_to_load_leaves_a_server_that_says_why(tmp_path: Path) -> None:
    not_a_pipeline = tmp_path / "not-a-pipeline"
    not_a_pipeline.mkdir()
    with server_thread(config(not_a_pipeline), wait_healthy=False) as server:
        wait_until(lambda: server.server.engine.state.value == "dead", 60, "the load to fail")
        health = requests.get(f"{server.url}/health", timeout=10)
        image = post_image(server.url)
        models = requests.get(f"{server.url}/v1/models", timeout=10)

    assert "model_index.json" in assert_error_body(health, 503)["error"]["message"]
    assert "model_index.json" in assert_error_body(image, 503)["error"]["message"]
    assert models.status_code == 200


def test_a_full_engine_answers_503_with_retry_after(tiny_flux_dir: Path) -> None:
    limits = {"max_num_running": 1, "max_num_waiting": 1}
    with server_thread(config(tiny_flux_dir, engine=limits)) as server:
        # 1000 steps at 256x256: far longer than the test (64x64 steps take ~2.5 ms, too quick).
        slow = {"prompt": "a slow cat", "num_inference_steps": 1000, "size": "256x256"}
        long_request = json.dumps(slow).encode()
        held = [open_request(server.url, IMAGES, long_request)]
        try:
            wait_until(lambda: stats(server.url)["num_running"] == 1, 30, "a running request")
            held.append(open_request(server.url, IMAGES, long_request))
            wait_until(lambda: stats(server.url)["num_waiting"] == 1, 30, "a waiting request")
            full = post_image(server.url)
        finally:
            for sock in held:
                sock.close()
        wait_until(
            lambda: (s := stats(server.url))["num_running"] + s["num_waiting"] == 0,
            30,
            "the engine to drop both disconnected requests",
        )
        counters = stats(server.url)
        assert_still_serving(server.url)

    assert assert_error_body(full, 503)["error"]["code"] == "engine_overloaded"
    assert int(full.headers["Retry-After"]) >= 1
    assert (counters["num_aborted"], counters["num_finished"]) == (2, 0), counters


def test_the_images_of_one_request_are_queued_together_or_refused_together(
    tiny_flux_dir: Path,
) -> None:
    limits = {"max_num_running": 1, "max_num_waiting": 1}
    with server_thread(config(tiny_flux_dir, engine=limits)) as server:
        never_fits = post_image(server.url, n=3)  # more than running + waiting can hold
        fits = post_image(server.url, n=2)  # one takes the free running slot, one waits
        counters = stats(server.url)

    error = assert_error_body(never_fits, 400)["error"]
    assert error["param"] == "n" and "--max-num-running plus --max-num-waiting" in error["message"]
    assert fits.status_code == 200, fits.text
    assert counters["num_finished"] == 2
    assert len(fits.json()["data"]) == 2


def test_an_output_over_max_output_pixels_is_a_400_naming_the_flag(
    tiny_flux_dir: Path, tiny_wan_dir: Path
) -> None:
    limit = {"max_output_pixels": 64 * 64}
    with server_thread(config(tiny_flux_dir, engine=limit)) as server:
        at_limit = post_image(server.url, size="64x64")
        over = post_image(server.url, size="64x80")
    with server_thread(config(tiny_wan_dir, engine={"max_output_pixels": 32 * 32 * 9})) as server:
        form = {"prompt": "a clip", "size": "32x32", "num_inference_steps": "1"}
        video_at_limit = requests.post(
            f"{server.url}/v1/videos/sync",
            files={k: (None, v) for k, v in form.items()},
            timeout=60,
        )
        form["num_frames"] = "13"
        video_over = requests.post(
            f"{server.url}/v1/videos", files={k: (None, v) for k, v in form.items()}, timeout=60
        )
        jobs = requests.get(f"{server.url}/v1/videos", timeout=10).json()["data"]

    assert at_limit.status_code == 200, at_limit.text
    message = assert_error_body(over, 400)["error"]["message"]
    assert "64x80 is 5,120 pixels" in message and "--max-output-pixels" in message
    assert video_at_limit.status_code == 200, video_at_limit.text
    message = assert_error_body(video_over, 400)["error"]["message"]
    assert "32x32 x 13 frames is 13,312 pixels" in message
    assert jobs == []  # refused before a job was made


def test_a_failed_generation_is_a_500_with_a_clear_message(
    tiny_flux_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_decode(self: FluxAdapter, requests: list[Any]) -> list[Any]:
        raise RuntimeError("the VAE decoder broke")

    with server_thread(config(tiny_flux_dir)) as server:
        with monkeypatch.context() as patch:
            patch.setattr(FluxAdapter, "decode", broken_decode)
            failed = post_image(server.url, n=2)
        assert_still_serving(server.url)
        counters = stats(server.url)

    error = assert_error_body(failed, 500)["error"]
    assert error["code"] == "generation_failed"
    assert "the VAE decoder broke" in error["message"]
    # The failed image fails; its sibling fails in the same batch or is aborted.
    assert counters["num_failed"] >= 1
    assert counters["num_failed"] + counters["num_aborted"] == 2


def test_a_video_model_answers_images_with_the_first_frame_of_a_one_frame_video(
    tiny_wan_dir: Path,
) -> None:
    with server_thread(config(tiny_wan_dir)) as server:
        response = post_image(server.url, size="32x32", seed=5, num_inference_steps=2)
        one_frame = GenerationParams(
            prompt="a cat", width=32, height=32, seed=5, num_inference_steps=2, num_frames=1
        )
        video = server.call(server.server.engine.generate(one_frame)).output

    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert video.shape[0] == 1
    assert np.array_equal(np.asarray(image.convert("RGB")), video[0])


def test_a_killed_cfg_parallel_worker_turns_health_to_503_within_seconds(tiny_flux_dir: Path):
    with server_thread(config(tiny_flux_dir, engine={"cfg_parallel_size": 2})) as server:
        assert post_image(server.url, seed=1).status_code == 200
        worker = server.server.engine._engine.runner.worker
        os.kill(worker.pid, signal.SIGKILL)
        wait_until(lambda: not is_healthy(server.url), 10, "/health to turn 503")
        health = requests.get(f"{server.url}/health", timeout=5)
        assert health.status_code == 503 and "rank 1" in health.json()["error"]["message"]
        assert_error_body(post_image(server.url), 503)
