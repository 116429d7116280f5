"""benchmarks/train_tiny.py trains a few steps and writes a model directory omni's engine serves;
benchmarks/cache.py measures such a directory with --model-dir. Nothing here is timed."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import FluxTransformer2DModel

from benchmarks import cache as cache_benchmark
from benchmarks.cache import benchmark_model, measure, parse_args
from benchmarks.train_tiny import LOG_FILE, main
from tests.conftest import run

FEW_STEPS = ["--max-steps", "2", "--batch", "2", "--size", "64", "--images", "4"]


def train_few(out) -> dict:
    main(["--out", str(out), "--log-every", "1", *FEW_STEPS])
    return json.loads((out / LOG_FILE).read_text())


def test_training_changes_the_benchmark_transformer_and_is_reproducible(tmp_path):
    first = train_few(tmp_path / "first")
    assert first["steps"] == 2
    losses = [point["loss"] for point in first["curve"]]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    second = [point["loss"] for point in train_few(tmp_path / "second")["curve"]]
    assert second == losses  # seeded

    trained = FluxTransformer2DModel.from_pretrained(tmp_path / "first" / "transformer")
    start = FluxTransformer2DModel.from_pretrained(benchmark_model(tmp_path / "r") / "transformer")
    shape = {k: v for k, v in trained.config.items() if not k.startswith("_")}
    assert shape == {k: v for k, v in start.config.items() if not k.startswith("_")}
    pairs = zip(trained.state_dict().values(), start.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_training_refuses_to_overwrite_a_model(tmp_path):
    train_few(tmp_path / "model")
    with pytest.raises(SystemExit, match="already holds a model"):
        train_few(tmp_path / "model")


def test_cache_benchmark_measures_a_trained_model_dir(tmp_path, monkeypatch):
    out = tmp_path / "trained"
    train_few(out)

    def no_default_model():
        raise AssertionError("--model-dir was not used")

    monkeypatch.setattr(cache_benchmark, "benchmark_model", no_default_model)
    args = parse_args(["--model-dir", str(out), "--caches", "fbcache:0.05", "--concurrency",
                       "2", "--steps", "3", "--size", "64", "--rounds", "1"])  # fmt: skip
    assert args.model_dir == out
    rows = run(measure(args))
    assert len(rows) == 1 and "| 2 | fbcache:0.05 |" in rows[0]


def test_cache_benchmark_rejects_a_dir_without_a_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--model-dir", str(tmp_path)])
    assert "no model_index.json" in capsys.readouterr().err
