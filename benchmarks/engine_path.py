"""The whole omni.engine path on a real model directory, timed per step from the inside."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from omni.config import EngineConfig
from omni.engine import AsyncEngine, Engine
from omni.request import GenerationParams


@dataclass(slots=True)
class StepTimes:
    """Seconds spent in each part of every engine step."""

    scheduler: list[float] = field(default_factory=list)  # schedule() + update()
    forward: list[float] = field(default_factory=list)  # runner.execute() on denoise-only steps
    other: list[float] = field(default_factory=list)  # runner.execute() with encode or decode

    def clear(self) -> None:
        self.scheduler.clear()
        self.forward.clear()
        self.other.clear()


@dataclass(slots=True)
class EngineRun:
    batch: int
    width: int
    height: int
    steps: int
    wall_s: float
    images_per_s: float
    forward_ms: float  # median runner time of a denoise-only step
    scheduler_us: float  # median schedule() + update() per step
    scheduler_share: float  # scheduler time over all engine step time
    batch_size_counts: dict[int, int]

    def line(self) -> str:
        return (
            f"{self.width}x{self.height} {self.batch:>3} requests x {self.steps} steps: "
            f"{self.wall_s:7.3f} s, {self.images_per_s:8.2f} img/s, denoise step "
            f"{self.forward_ms:8.2f} ms, scheduler {self.scheduler_us:7.1f} us/step "
            f"({self.scheduler_share:.2%} of step time), batches {self.batch_size_counts}"
        )


def timed(call: Callable[..., Any], record: Callable[[float, tuple], None]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        start = time.perf_counter()
        result = call(*args)
        record(time.perf_counter() - start, args)
        return result

    return wrapper


def instrument_scheduler(engine: Engine, times: StepTimes) -> None:
    """schedule() + update() of the steps that ran a forward. Between forwards, while encodes
    or decodes finish on the stage threads, the engine may call schedule() and find nothing to
    run: that is idle time, not a cost of the step."""
    scheduler = engine.scheduler
    schedule, update = scheduler.schedule, scheduler.update

    def timed_schedule() -> Any:
        start = time.perf_counter()
        output = schedule()
        if output.denoise:
            times.scheduler.append(time.perf_counter() - start)
        return output

    def timed_update(output: Any, runner_output: Any) -> Any:
        start = time.perf_counter()
        done = update(output, runner_output)
        if output.denoise:
            times.scheduler.append(time.perf_counter() - start)
        return done

    scheduler.schedule, scheduler.update = timed_schedule, timed_update


def instrument_runner(engine: Engine, times: StepTimes) -> None:
    def record(seconds: float, args: tuple) -> None:
        output = args[0]
        only_denoise = output.denoise and not output.prepare and not output.decode
        (times.forward if only_denoise else times.other).append(seconds)

    engine.runner.execute = timed(engine.runner.execute, record)


def request_params(batch: int, width: int, height: int, steps: int) -> list[GenerationParams]:
    return [
        GenerationParams(
            prompt=f"benchmark prompt {i}",
            width=width,
            height=height,
            num_inference_steps=steps,
            seed=i,
        )
        for i in range(batch)
    ]


async def measure(
    config: EngineConfig, batches: Sequence[int], width: int, height: int, steps: int
) -> list[EngineRun]:
    times = StepTimes()
    engine = Engine(config, publish=lambda event: None)  # AsyncEngine sets the real one
    instrument_scheduler(engine, times)
    async_engine = AsyncEngine(config, engine=engine)
    await async_engine.start()
    runs = []
    try:
        await async_engine.wait_ready(timeout=900)
        instrument_runner(engine, times)
        for batch in batches:
            params = request_params(batch, width, height, steps)
            await asyncio.gather(*(async_engine.generate(p) for p in params))  # warm-up
            times.clear()
            before = async_engine.stats().batch_size_counts
            start = time.perf_counter()
            await asyncio.gather(*(async_engine.generate(p) for p in params))
            wall = time.perf_counter() - start
            after = async_engine.stats().batch_size_counts
            counts = {k: v - before.get(k, 0) for k, v in sorted(after.items())}
            runs.append(engine_run(batch, width, height, steps, wall, times, counts))
    finally:
        await async_engine.stop()
    return runs


def engine_run(
    batch: int,
    width: int,
    height: int,
    steps: int,
    wall: float,
    times: StepTimes,
    counts: dict[int, int],
) -> EngineRun:
    scheduler_total = sum(times.scheduler)
    step_total = scheduler_total + sum(times.forward) + sum(times.other)
    # Each step calls schedule() and update() once: pair them up for a per-step figure.
    per_step = [a + b for a, b in zip(times.scheduler[::2], times.scheduler[1::2], strict=False)]
    return EngineRun(
        batch=batch,
        width=width,
        height=height,
        steps=steps,
        wall_s=wall,
        images_per_s=batch / wall,
        forward_ms=statistics.median(times.forward) * 1000 if times.forward else float("nan"),
        scheduler_us=statistics.median(per_step) * 1e6 if per_step else float("nan"),
        scheduler_share=scheduler_total / step_total if step_total else float("nan"),
        batch_size_counts={k: v for k, v in counts.items() if v},
    )


def run_engine_path(
    model: str,
    device: torch.device,
    batches: Sequence[int],
    width: int,
    height: int,
    steps: int,
    cache: str = "none",
    cache_threshold: float | None = None,
) -> list[EngineRun]:
    """For each batch size B: B same-shaped requests submitted at once, after one warm-up round.

    One engine serves every round; its batch cap is the largest B, so each round runs whole.
    `cache` is the server's step cache (--cache), which every request then uses.
    """
    config = EngineConfig(
        model=model,
        device=str(device),
        max_batch_size=max(batches),
        max_num_running=max(*batches, 64),
        profile_seconds=0,  # each round runs whole: no token budget below max_batch_size
        cache=cache,
        cache_threshold=cache_threshold,
    )
    return asyncio.run(measure(config, batches, width, height, steps))
