"""Micro-benchmarks (pytest-benchmark); not part of the test suite, which only collects tests/.

python -m pytest benchmarks/test_micro.py --benchmark-only
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from benchmarks.scheduler_cost import SteadyScheduler

pytest.importorskip("pytest_benchmark")

RESOLUTION_GROUPS = ("512x512", "768x768", "1024x1024", "1536x1536")
STEP_COUNTS = (4, 8, 20, 28, 50)


def smooth_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """Moving colour waves: compressible like a generated video, unlike random noise."""
    t = np.linspace(0, 1, num_frames)[:, None, None, None]
    y = np.linspace(0, 1, height)[None, :, None, None]
    x = np.linspace(0, 1, width)[None, None, :, None]
    phase = np.array([0.0, 0.33, 0.66])[None, None, None, :]
    return (127.5 * (1 + np.sin(2 * np.pi * (3 * x + 2 * y + t + phase)))).astype(np.uint8)


def encode_png(image: Image.Image) -> bytes:
    from omni.http.encoding import encode_image

    return encode_image(image, "png")


def test_schedule_and_update_with_256_live_requests(benchmark):
    steady = SteadyScheduler(
        num_live=256, max_batch_size=16, keys=RESOLUTION_GROUPS, step_counts=STEP_COUNTS
    )
    for _ in range(200):  # past the admissions, into a steady state with finishes and arrivals
        steady.step()
    assert len(steady.scheduler.running) == 256
    ran = benchmark(steady.step)
    assert 1 <= ran <= 16


@pytest.mark.parametrize("content", ["smooth", "noise"])
def test_png_encoding_1024x1024(benchmark, content):
    if content == "noise":  # the worst case: nothing to compress
        pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    else:
        pixels = smooth_frames(1, 1024, 1024)[0]
    image = Image.fromarray(pixels)
    encoded = benchmark(encode_png, image)
    assert encoded.startswith(b"\x89PNG")


def test_mp4_encoding_33_frames_832x480(benchmark):
    from omni.media import encode_mp4

    frames = smooth_frames(33, 480, 832)
    encoded = benchmark.pedantic(encode_mp4, args=(frames, 16), rounds=5, warmup_rounds=1)
    assert encoded[4:8] == b"ftyp"


@pytest.fixture(scope="module")
def tiny_mixed_rows():
    """omni-tiny's adapter and 8 prepared rows of 4 sizes (a padded forward)."""
    import torch

    from omni.config import EngineConfig
    from omni.models import load_model
    from omni.request import GenerationParams, Request

    adapter = load_model(EngineConfig(model="omni-tiny"))
    requests = []
    for index, side in enumerate((32, 48, 64, 96) * 2):
        params = adapter.resolve(
            GenerationParams(prompt="a lighthouse", seed=index, height=side, width=side)
        )
        requests.append(Request(f"r{index}", params, *adapter.plan(params)))
    with torch.inference_mode():
        adapter.prepare(requests)
    return adapter, adapter.rows(requests)


@pytest.mark.parametrize("tables", ["kept", "rebuilt"])
def test_flux_forward_of_mixed_sizes_rotary_tables(benchmark, tiny_mixed_rows, tables):
    """One padded forward of 8 rows in 4 sizes and one of the 2 rows of the smallest size, with the
    rotary tables kept per size (omni's way) or rebuilt at every forward (the transformer's)."""
    import torch

    from omni.models.rotary import RotaryTables

    adapter, rows = tiny_mixed_rows
    kept = adapter.rotary
    if tables == "rebuilt":
        adapter.rotary = RotaryTables(kept.pos_embed, max_bytes=0)
    try:
        with torch.inference_mode():
            benchmark(lambda: (adapter.forward(rows), adapter.forward(rows[::4])))
    finally:
        adapter.rotary = kept
