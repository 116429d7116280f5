"""Issue 2's benchmark: N concurrent requests through the engine vs one after another in diffusers.

    python -m benchmarks.engine_vs_pipeline [--model omni-tiny] [--requests 16] [--steps 8]

Both sides use the same model directory, the same prompts, seeds, size and step count, on the
same device, in this one process, measured side by side. Each side runs once untimed to warm up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import torch
from diffusers import FluxPipeline

from omni.config import EngineConfig
from omni.engine import AsyncEngine
from omni.models import resolve_model_dir
from omni.request import GenerationParams


def make_params(count: int, steps: int, size: int) -> list[GenerationParams]:
    return [
        GenerationParams(
            prompt=f"benchmark prompt number {i}",
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=3.5,
            seed=i,
        )
        for i in range(count)
    ]


def run_pipeline(pipe: FluxPipeline, params: list[GenerationParams], device: str) -> float:
    start = time.perf_counter()
    for p in params:
        pipe(
            prompt=p.prompt,
            width=p.width,
            height=p.height,
            num_inference_steps=p.num_inference_steps,
            guidance_scale=p.guidance_scale,
            max_sequence_length=min(512, pipe.tokenizer_2.model_max_length),
            generator=torch.Generator("cpu").manual_seed(p.seed),
        )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


async def run_engine(config: EngineConfig, params: list[GenerationParams], repeats: int):
    engine = AsyncEngine(config)
    await engine.start()
    try:
        await engine.wait_ready(timeout=600)
        await asyncio.gather(*(engine.generate(p) for p in params))  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            await asyncio.gather(*(engine.generate(p) for p in params))
            times.append(time.perf_counter() - start)
        return times, engine.stats()
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="omni-tiny")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    config = EngineConfig(
        model=args.model,
        device=args.device,
        max_batch_size=args.max_batch_size,
        max_num_running=max(args.requests, 1),
    )
    params = make_params(args.requests, args.steps, args.size)
    engine_times, stats = asyncio.run(run_engine(config, params, args.repeats))

    device = str(config.torch_device)
    pipe = FluxPipeline.from_pretrained(resolve_model_dir(args.model), dtype=config.torch_dtype).to(
        device
    )
    pipe.set_progress_bar_config(disable=True)
    run_pipeline(pipe, params[:2], device)  # warm-up
    pipeline_times = [run_pipeline(pipe, params, device) for _ in range(args.repeats)]

    engine_rate = args.requests / min(engine_times)
    pipeline_rate = args.requests / min(pipeline_times)
    threads = torch.get_num_threads()
    print(f"device: {device}, dtype: {config.torch_dtype}, torch threads: {threads}")
    print(
        f"workload: {args.requests} requests x {args.steps} steps at {args.size}x{args.size}, "
        f"best of {args.repeats}"
    )
    print(f"omni engine (concurrent):       {engine_rate:8.2f} images/s")
    print(f"diffusers FluxPipeline (serial): {pipeline_rate:8.2f} images/s")
    print(f"ratio: {engine_rate / pipeline_rate:.2f}x")
    print(f"engine batch sizes seen: {dict(sorted(stats.batch_size_counts.items()))}")


if __name__ == "__main__":
    main()
