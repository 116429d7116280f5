"""Does encoding or decoding hold up the running batch? Step times around a burst, both ways.

    python -m benchmarks.stage_jitter --model omni-tiny-video

16 requests denoise small clips; then 4 requests whose large clips decode after one step, and
32 new admissions to encode, arrive at once. With stages overlapped (the default) the forward
keeps stepping while they encode and decode on worker threads; with `--no-overlap-stages` they
run inside the engine step. Prints the interval between consecutive forwards (p50, p99, max)
during the burst, and the longest stage call, for each mode.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from dataclasses import dataclass

from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.engine.engine import StepRecord
from omni.engine.stages import StageRecord
from omni.request import GenerationParams

SMALL = dict(width=64, height=64, num_frames=5, num_inference_steps=1000)
LARGE = dict(width=128, height=128, num_frames=33, num_inference_steps=1)


@dataclass(frozen=True, slots=True)
class Burst:
    steps: list[StepRecord]  # forwards from the burst's start to the last decode's end
    stages: list[StageRecord]  # stage calls in the same window

    @property
    def intervals_ms(self) -> list[float]:
        ends = [s.end for s in self.steps]
        return [(b - a) * 1000 for a, b in itertools.pairwise(ends)]

    def forwards_within(self, stage: StageRecord) -> int:
        return sum(1 for s in self.steps if s.start >= stage.start and s.end <= stage.end)

    def summary(self, label: str) -> str:
        gaps = sorted(self.intervals_ms)
        p99 = gaps[min(len(gaps) - 1, round(0.99 * (len(gaps) - 1)))]
        longest = max(s.end - s.start for s in self.stages) * 1000
        return (
            f"{label:>12}: {len(self.steps)} forwards, interval p50 "
            f"{statistics.median(gaps):.1f} ms, p99 {p99:.1f} ms, max {gaps[-1]:.1f} ms; "
            f"longest stage call {longest:.1f} ms"
        )


def params(size: dict, seed: int) -> GenerationParams:
    return GenerationParams(prompt=f"a clip number {seed}", seed=seed, **size)


async def run_burst(model: str, overlap: bool) -> Burst:
    config = EngineConfig(
        model=model, overlap_stages=overlap, profile_seconds=0, max_num_running=64
    )
    engine = AsyncEngine(config)
    await engine.start()
    try:
        await engine.wait_ready(timeout=600)
        core = engine._engine
        running = [asyncio.ensure_future(engine.generate(params(SMALL, i))) for i in range(16)]
        while core.stats.num_steps_run < 5:
            await asyncio.sleep(0.005)
        start = time.monotonic()
        videos = [engine.generate(params(LARGE, 100 + i)) for i in range(4)]
        admitted = [
            asyncio.ensure_future(engine.generate(params(SMALL, 200 + i))) for i in range(32)
        ]
        await asyncio.gather(*videos)
        end = time.monotonic()
        for task in running + admitted:
            task.cancel()
        await asyncio.gather(*running, *admitted, return_exceptions=True)
        steps = [s for s in core.step_records if s.start >= start and s.end <= end]
        stages = [s for s in core.runner.stages.records if s.start >= start and s.end <= end]
        return Burst(steps, stages)
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="omni-tiny-video")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode, alternating")
    args = parser.parse_args()
    for _ in range(args.repeats):
        for overlap in (True, False):
            burst = asyncio.run(run_burst(args.model, overlap))
            print(burst.summary("overlapped" if overlap else "inline"), flush=True)


if __name__ == "__main__":
    main()
