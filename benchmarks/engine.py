"""Offline engine benchmark: ms per denoising step, images/s and MFU against batch size.

    python -m benchmarks.engine --arch flux-dev --size 512 1024 --batch-sizes 1 2 4 8 16
    python -m benchmarks.engine --arch tiny            # CPU, seconds

Three measurements, no HTTP:

* transformer: the architecture built from its config with random weights (bf16 on a GPU,
  float32 on a CPU), one batched forward with a timestep per sample, as omni's runner calls it.
  images/s is batch / (ms per step x --steps): denoising only, text encoding and VAE excluded.
  MFU is the forward's FLOPs, counted op by op on a "meta" copy (benchmarks.archs.counted_flops:
  the 2 x params x tokens estimate runs 1.7-2.5x high for dual-stream FLUX, SD3 and Qwen-Image),
  over the device's dense bf16 peak.
* scheduler: omni's Scheduler.schedule() + update() with as many live requests as the batch,
  against the forward it would drive: the bookkeeping overhead per step.
* engine (built-in tiny models, or --engine-model DIR): the whole omni.engine path, all requests
  submitted at once, with time inside the scheduler and the runner measured per step.

Full-size architectures refuse to run on a CPU (FLUX.1-dev is 12 B parameters: 48 GB in float32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from benchmarks.archs import (
    ARCH_NAMES,
    Arch,
    build,
    count_parameters,
    counted_flops,
    get_arch,
    make_inputs,
)
from benchmarks.engine_path import run_engine_path
from benchmarks.engine_report import (
    EngineReport,
    StepResult,
    format_step,
    plot,
    step_result,
    table,
)
from benchmarks.scheduler_cost import scheduler_step_seconds
from omni.limits import CACHE_TYPES

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, without sparsity.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))
DEFAULT_SIZES = {
    "flux-dev": ["512", "1024"],
    "wan2.1-1.3b": ["832x480"],
    "wan2.2-a14b": ["1280x720"],
    "qwen-image": ["1328"],
    "z-image": ["1024"],
    "sd3.5-large": ["1024"],
}
DEFAULT_FRAMES = {"wan2.1-1.3b": 33, "wan2.2-a14b": 81}


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for marker, peak in PEAK_BF16_TFLOPS:
        if marker in name:
            return peak
    raise SystemExit(f"no known bf16 peak for {name!r}: pass --peak-tflops")


def time_ms(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of `step` in ms, the device synchronized around each call."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_transformer(
    arch: Arch, model: torch.nn.Module, args: argparse.Namespace, report: EngineReport
) -> None:
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    for width, height in map(parse_size, args.size):
        flops = counted_flops(arch, width, height, args.frames)
        for batch in args.batch_sizes:
            inputs = make_inputs(arch, batch, width, height, args.frames, device, dtype)
            try:
                with torch.inference_mode():
                    ms = time_ms(partial(model, **inputs), device, args.warmup, args.repeats)
            except torch.OutOfMemoryError:
                inputs = None
                torch.cuda.empty_cache()
                report.transformer.append(StepResult(width, height, batch, None))
                print(f"{width}x{height} batch {batch:>3}: out of memory", file=sys.stderr)
                break
            result = step_result(width, height, batch, ms, flops, report, args.steps)
            scheduler_s = scheduler_step_seconds(batch, args.steps)
            result.scheduler_us = scheduler_s * 1e6
            result.scheduler_share = scheduler_s / (scheduler_s + ms / 1000)
            report.transformer.append(result)
            print(format_step(result), file=sys.stderr)


def choose_device(arch: Arch, requested: str) -> torch.device:
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if requested == "auto" else requested
    )
    if device.type == "cpu" and arch.is_full_size:
        raise SystemExit(
            f"--arch {arch.name} is a full-size model (FLUX.1-dev: 12 B parameters, 48 GB in"
            " float32): it is built only on a GPU. Use --arch tiny or tiny-video on a CPU."
        )
    return device


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCH_NAMES, default="tiny")
    parser.add_argument("--size", nargs="+", help="W or WxH; default per arch")
    parser.add_argument("--frames", type=int, help="video frames (Wan); default per arch")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=28, help="steps per image, for images/s")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--peak-tflops", type=float, help="device peak; default from its name")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, help="timed forwards per point (GPU 5, CPU 20)")
    parser.add_argument("--torch-threads", type=int, help="CPU threads for torch")
    parser.add_argument("--engine-model", help="run the omni.engine path on this model too")
    parser.add_argument(
        "--cache",
        choices=CACHE_TYPES,
        default="none",
        help="the engine path's step cache (--cache of omni.serve); the transformer-only "
        "measurement has none",
    )
    parser.add_argument("--cache-threshold", type=float, default=None)
    parser.add_argument("--no-engine", action="store_true", help="skip the omni.engine path")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--profile-json", type=Path, help="only write a simulator profile here")
    parser.add_argument("--profile-sides", type=int, nargs="+", default=[32, 48, 64, 96, 128])
    args = parser.parse_args(argv)

    quiet_libraries()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if args.profile_json:
        write_sim_profile(args)
        return
    arch = get_arch(args.arch)
    device = choose_device(arch, args.device)
    args.repeats = args.repeats or (5 if device.type == "cuda" else 20)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    args.size = args.size or DEFAULT_SIZES.get(arch.name) or [str(tiny_side(arch))]
    args.frames = args.frames or DEFAULT_FRAMES.get(arch.name, 9 if arch.family == "wan" else 1)
    model = build(arch, device, dtype)
    report = EngineReport(
        arch=arch.name,
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU",
        dtype=str(dtype).removeprefix("torch."),
        num_params=count_parameters(model),
        steps=args.steps,
        num_frames=args.frames,
        peak_tflops=peak_tflops(device, args.peak_tflops),
    )
    measure_transformer(arch, model, args, report)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    engine_model = args.engine_model or (None if args.no_engine else arch.builtin_model)
    if engine_model and not args.no_engine:
        width, height = parse_size(args.size[0])
        report.engine = run_engine_path(
            engine_model,
            device,
            args.batch_sizes,
            width,
            height,
            args.steps,
            args.cache,
            args.cache_threshold,
        )

    print(table(report))
    stem = args.output_dir / f"engine-{arch.name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    written = plot(report, stem.with_name(stem.name + ".png"))
    print(f"wrote {stem}.json and {written}", file=sys.stderr)


def write_sim_profile(args: argparse.Namespace) -> None:
    """The simulator's cost model of a built-in model, measured here (benchmarks.simulate)."""
    from benchmarks.sim_measure import measure_profile

    model = args.engine_model or get_arch(args.arch).builtin_model
    batches = sorted({1, 2, 4, 8, 16, 32, *args.batch_sizes})
    profile = measure_profile(model, args.profile_sides, batches, args.repeats or 15)
    args.profile_json.parent.mkdir(parents=True, exist_ok=True)
    args.profile_json.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"wrote {args.profile_json} in {profile['measured_in_s']:.0f} s", file=sys.stderr)


def quiet_libraries() -> None:
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()


def tiny_side(arch: Arch) -> int:
    from omni.models.base import ServingDefaults
    from omni.models.tiny import ensure_builtin

    defaults = ServingDefaults.read(ensure_builtin(arch.builtin_model))
    return defaults.width or 64


if __name__ == "__main__":
    main()
