"""Step caching on the CPU: images/s with a step cache against without, side by side.

    python -m benchmarks.cache --caches fbcache:0.05 fbcache:0.45 taylorseer --concurrency 1 16
    python -m benchmarks.cache --model-dir /tmp/omni-cache-bench-trained   # benchmarks/train_tiny

The model is omni-tiny with its transformer swapped for a wider, deeper one (8 blocks of width
256, 256 image tokens at 256x256), so the transformer dominates a step as it does at full size.
Every round runs the uncached and the cached sides one after the other (alternating which goes
first), with the same seeds; the table gives medians over rounds of the cached side's images/s
over the uncached side's, the steps skipped per image and the mean absolute pixel difference
between the two sides' images (0-255). `--model-dir` measures another model directory instead
(the same transformer trained by benchmarks/train_tiny.py, say).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import FluxTransformer2DModel

from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.models.tiny import ensure_builtin
from omni.request import GenerationParams

MODEL_DIR = Path("/tmp/omni-cache-bench-model")
PROMPT = "a lighthouse on a cliff at dusk"
WIDE_TRANSFORMER = {"num_layers": 2, "num_single_layers": 6, "num_attention_heads": 4,
                    "attention_head_dim": 64}  # fmt: skip


def benchmark_model(path: Path = MODEL_DIR) -> Path:
    """omni-tiny's pipeline with an 8-block, 256-wide transformer (random weights, seed 0)."""
    if (path / "transformer" / "config.json").is_file():
        return path
    source = ensure_builtin("omni-tiny")
    shutil.copytree(source, path, dirs_exist_ok=True)
    config = FluxTransformer2DModel.load_config(source / "transformer")
    config = {k: v for k, v in config.items() if not k.startswith("_")} | WIDE_TRANSFORMER
    config["axes_dims_rope"] = (8, 28, 28)  # sums to the head width, as FLUX's 16+56+56 = 128
    torch.manual_seed(0)
    FluxTransformer2DModel(**config).save_pretrained(path / "transformer")
    return path


@dataclass
class Side:
    images_per_s: float
    skipped: float  # mean steps skipped per image
    images: list[np.ndarray]


def parse_cache(spec: str) -> tuple[str, float | None]:
    """ "fbcache:0.45" -> ("fbcache", 0.45); "taylorseer" -> ("taylorseer", None)."""
    kind, _, threshold = spec.partition(":")
    return kind, float(threshold) if threshold else None


async def run_side(engine: AsyncEngine, count: int, steps: int, spec: str, size: int) -> Side:
    kind, threshold = parse_cache(spec)
    cache = {"cache": kind, "cache_threshold": threshold}
    params = [
        GenerationParams(
            prompt=PROMPT,
            width=size,
            height=size,
            num_inference_steps=steps,
            seed=seed,
            **cache,
        )
        for seed in range(count)
    ]
    started = time.perf_counter()
    finished = await engine.generate_many(params)
    elapsed = time.perf_counter() - started
    skipped = [f.cache_skipped_steps or 0 for f in finished]
    images = [np.asarray(f.output, dtype=np.float64) for f in finished]
    return Side(count / elapsed, statistics.mean(skipped), images)


async def measure(args: argparse.Namespace) -> list[str]:
    model = args.model_dir if args.model_dir is not None else benchmark_model()
    engine = AsyncEngine(EngineConfig(model=str(model), profile_seconds=0))
    await engine.start()
    await engine.wait_ready()
    rows = []
    try:
        await run_side(engine, 1, 2, "none", args.size)  # warm-up
        for concurrency in args.concurrency:
            for spec in args.caches:
                speedups, skips, diffs = [], [], []
                for round_index in range(args.rounds):
                    order = ("none", spec) if round_index % 2 == 0 else (spec, "none")
                    sides = {}
                    for side in order:
                        sides[side] = await run_side(
                            engine, concurrency, args.steps, side, args.size
                        )
                    plain, cached = sides["none"], sides[spec]
                    speedups.append(cached.images_per_s / plain.images_per_s)
                    skips.append(cached.skipped)
                    diffs.append(
                        statistics.mean(
                            float(np.abs(a - b).mean())
                            for a, b in zip(plain.images, cached.images, strict=True)
                        )
                    )
                rows.append(
                    f"| {concurrency} | {spec} | {statistics.median(skips):.1f} of "
                    f"{args.steps} | {statistics.median(speedups):.2f}x "
                    f"({', '.join(f'{s:.2f}' for s in speedups)}) | "
                    f"{statistics.median(diffs):.2f} |"
                )
                print(rows[-1], flush=True)
    finally:
        await engine.stop()
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--caches",
        nargs="+",
        default=["fbcache:0.05", "fbcache:0.45", "taylorseer"],
        help="type[:threshold] of each cached side",
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model directory to measure (default: the random-weight benchmark model)",
    )
    args = parser.parse_args(argv)
    if args.model_dir is not None and not (args.model_dir / "model_index.json").is_file():
        parser.error(f"--model-dir {args.model_dir}: no model_index.json there")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    header = [
        "| concurrent | cache | steps skipped | images/s cached / uncached (rounds) | "
        "mean pixel diff |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(header), flush=True)
    rows = asyncio.run(measure(args))
    print("\n".join(header + rows))


if __name__ == "__main__":
    main()
