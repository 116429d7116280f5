"""How far the first-block residual moves from one step to the next: what fbcache's threshold
bounds, measured in omni's engine.

    python -m benchmarks.residual_change                       # the random-weight model
    python -m benchmarks.residual_change --model-dir /tmp/omni-cache-bench-trained

Each request runs alone with fbcache at a threshold of 1e-9, so no step is skipped and every
step from the second on computes the engine's own measure (relative mean absolute difference of
the first block's residual against the previous step's), which is recorded here. Prompts: the one
benchmarks/cache.py uses and one of benchmarks/train_tiny.py's training prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from unittest import mock

import torch

from benchmarks.cache import PROMPT, benchmark_model
from benchmarks.synthetic_images import PROMPTS
from omni.cache import first_block
from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.request import GenerationParams

TINY_THRESHOLD = 1e-9  # thresholds must be above 0; this one skips no step


async def changes_per_step(args: argparse.Namespace) -> dict[tuple[str, int], list[float]]:
    model = args.model_dir if args.model_dir is not None else benchmark_model()
    engine = AsyncEngine(EngineConfig(model=str(model), profile_seconds=0))
    await engine.start()
    await engine.wait_ready()
    measured = first_block.relative_change
    changes: list[float] = []

    def recording(residual: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        change = measured(residual, previous)
        changes.append(float(change))
        return change

    results = {}
    try:
        with mock.patch.object(first_block, "relative_change", recording):
            for prompt in (PROMPT, PROMPTS[0]):
                for seed in range(args.seeds):
                    changes.clear()
                    params = GenerationParams(
                        prompt=prompt,
                        width=args.size,
                        height=args.size,
                        num_inference_steps=args.steps,
                        seed=seed,
                        cache="fbcache",
                        cache_threshold=TINY_THRESHOLD,
                    )
                    await engine.generate_many([params])
                    results[(prompt, seed)] = list(changes)
    finally:
        await engine.stop()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)
    results = asyncio.run(changes_per_step(args))
    print("| prompt | seed | min | median | max | steps 2-28 with change <= 0.05 / <= 0.1 |")
    print("|---|---|---|---|---|---|")
    for (prompt, seed), values in results.items():
        under = [sum(v <= limit for v in values) for limit in (0.05, 0.1)]
        print(
            f"| {prompt} | {seed} | {min(values):.3f} | {statistics.median(values):.3f} | "
            f"{max(values):.3f} | {under[0]} / {under[1]} of {len(values)} |"
        )
    for (prompt, seed), values in results.items():
        print(f"{prompt!r} seed {seed}: " + " ".join(f"{v:.3f}" for v in values))


if __name__ == "__main__":
    main()
