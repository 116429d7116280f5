from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
import torch
from aiohttp import web
from PIL import Image

from benchmarks.baseline_params import ImageParams
from benchmarks.baseline_server import (
    Job,
    PipelineWorker,
    build_app,
    load_pipeline,
)
from benchmarks.serve import LoadPlan, benchmark
from benchmarks.workload import load_workload
from tests.conftest import run


def params(prompt: str = "a cat", seed: int = 0, **changes) -> ImageParams:
    fields = dict(
        prompt=prompt,
        seed=seed,
        width=64,
        height=64,
        num_inference_steps=2,
        guidance_scale=3.5,
        true_cfg_scale=1.0,
        negative_prompt=None,
        n=1,
    )
    return ImageParams(**{**fields, **changes})


def job(p: ImageParams) -> Job:
    return Job(p, future=None)


def test_batched_worker_takes_the_oldest_request_and_its_compatible_followers():
    worker = PipelineWorker(pipe=None, device=torch.device("cpu"), max_batch_images=3)
    first, other_size, same_a, same_b, same_c = (
        job(params("a", 1)),
        job(params("b", 2, width=128)),
        job(params("c", 3)),
        job(params("d", 4)),
        job(params("e", 5)),
    )
    for j in (first, other_size, same_a, same_b, same_c):
        worker.waiting.append(j)
    assert worker.take_batch() == [first, same_a, same_b]  # capped at 3 images
    assert worker.take_batch() == [other_size]
    assert worker.take_batch() == [same_c]


def test_sequential_worker_runs_one_request_per_call():
    worker = PipelineWorker(pipe=None, device=torch.device("cpu"), max_batch_images=1)
    jobs = [job(params(str(i), i)) for i in range(3)]
    worker.waiting.extend(jobs)
    assert [worker.take_batch() for _ in jobs] == [[j] for j in jobs]


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_flux_dir):
    return load_pipeline(str(tiny_flux_dir), "cpu", "float32")


def test_one_batched_call_gives_each_request_the_image_it_gets_alone(tiny_pipeline):
    pipe, device, _ = tiny_pipeline
    worker = PipelineWorker(pipe, device, max_batch_images=2)
    a, b = job(params("a red car", 11)), job(params("a blue boat", 12))
    together = worker.call_pipeline([a, b])
    alone = [worker.call_pipeline([job(a.params)])[0], worker.call_pipeline([job(b.params)])[0]]
    for batched, single in zip(together, alone, strict=True):
        difference = np.abs(np.asarray(batched, int) - np.asarray(single, int))
        assert difference.max() <= 2  # float32 batched matmuls round a little differently
    assert not np.array_equal(np.asarray(together[0]), np.asarray(together[1]))
    assert a.first_step is not None and a.first_step <= a.finished


@pytest.fixture(scope="module")
def baseline_url(tiny_pipeline):
    """The batched baseline on a loopback port, served from its own thread and event loop."""
    pipe, device, defaults = tiny_pipeline
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: dict[str, int] = {}
    runner = web.AppRunner(build_app(pipe, device, defaults, max_batch_images=4))

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        address["port"] = runner.addresses[0][1]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(60)
    yield f"http://127.0.0.1:{address['port']}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def test_baseline_answers_like_the_images_api_with_timing_headers(baseline_url):
    import requests

    response = requests.post(
        baseline_url + "/v1/images/generations",
        json={"prompt": "a cat", "size": "32x48", "num_inference_steps": 2, "seed": 5},
        timeout=60,
    )
    assert response.status_code == 200
    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert image.size == (32, 48)
    queue_time = float(response.headers["x-queue-time-s"])
    inference_time = float(response.headers["x-inference-time-s"])
    assert 0 < queue_time <= inference_time


def test_baseline_rejects_a_bad_size_with_an_error_envelope(baseline_url):
    import requests

    response = requests.post(
        baseline_url + "/v1/images/generations", json={"prompt": "x", "size": "big"}, timeout=30
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "size"


def test_load_generator_runs_a_whole_plan_against_a_real_server(baseline_url):
    workload = load_workload("mixed-resolution").scaled(1 / 16, 0.1)
    plan = LoadPlan(
        concurrencies=(3,), rates=(50.0,), num_requests=6, standalone_repeats=1, slo_factors=(50,)
    )
    result = run(benchmark(baseline_url, workload, plan, "baseline"), timeout=120)
    assert set(result.standalone_s) == {c.name for c in workload.classes}
    assert [(lv.mode, lv.num_requests, lv.num_ok) for lv in result.levels] == [
        ("concurrency", 9, 9),
        ("rate", 6, 6),
    ]
    assert all(lv.queue_time is not None for lv in result.levels)
    served = [
        sum(int(size) * n for size, n in lv.batch_size_counts.items()) for lv in result.levels
    ]
    assert served == [9, 6]  # warm-up requests are not counted in a level
    assert result.server_stats["num_finished"] >= 15
