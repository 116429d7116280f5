"""Issue 5's GPU benchmark: one denoising step with real CFG, CFG-parallel 1 vs 2, per backend.

    python -m benchmarks.cfg_step --arch flux-dev --size 1024 --batch 1 \\
        --cfg-parallel 1,2 --backends sdpa,flash,xformers

Builds the transformer from its config with random weights (bf16 on CUDA, float32 on CPU), so
nothing is downloaded. CFG-parallel 1 runs the 2B rows (conditional + unconditional) in one
forward; CFG-parallel 2 starts two processes, each running B rows, and all-gathers the result,
as omni's CfgParallelRunner does. Two processes on one GPU share it, so that figure shows the
overhead, not a speedup; a real speedup needs one GPU per rank.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks import archs
from benchmarks.engine import time_ms
from omni.models.attention import DISPATCHER_NAMES, resolve_attention_backend

ARCHS = ("tiny", "flux-dev")


def build(arch: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return archs.build(archs.get_arch(arch), device, dtype)


def inputs(arch: str, rows: int, size: int, device: torch.device, dtype: torch.dtype) -> dict:
    return archs.make_inputs(archs.get_arch(arch), rows, size, size, 1, device, dtype)


def set_backend(model: torch.nn.Module, backend: str, device: torch.device) -> None:
    backend = resolve_attention_backend(backend, device)
    model.set_attention_backend(DISPATCHER_NAMES[backend])


def single(args: argparse.Namespace, backend: str) -> float:
    device, dtype = devices(args)
    model = build(args.arch, device, dtype)
    set_backend(model, backend, device)
    batch = inputs(args.arch, 2 * args.batch, args.size, device, dtype)
    with torch.inference_mode():
        return time_ms(lambda: model(**batch), device, args.warmup, args.repeats)


def parallel_rank(rank: int, args: argparse.Namespace, backend: str, init: str, out: str) -> None:
    device, dtype = devices(args)
    use_nccl = device.type == "cuda" and torch.cuda.device_count() >= 2
    if use_nccl:
        device = torch.device(f"cuda:{rank}")
    dist.init_process_group(
        "nccl" if use_nccl else "gloo", init_method=init, rank=rank, world_size=2
    )
    model = build(args.arch, device, dtype)
    set_backend(model, backend, device)
    batch = inputs(args.arch, args.batch, args.size, device, dtype)
    carrier = device if use_nccl else torch.device("cpu")

    def step() -> None:
        local = model(**batch)[0].to(carrier)
        pieces = [torch.empty_like(local) for _ in range(2)]
        dist.all_gather(pieces, local)

    with torch.inference_mode():
        median = time_ms(step, device, args.warmup, args.repeats)
    if rank == 0:
        Path(out).write_text(json.dumps(median))
    dist.destroy_process_group()


def parallel(args: argparse.Namespace, backend: str) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        out = str(Path(workdir) / "median.json")
        init = f"file://{Path(workdir) / 'rendezvous'}"
        mp.spawn(parallel_rank, args=(args, backend, init, out), nprocs=2, join=True)
        return json.loads(Path(out).read_text())


def devices(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and args.arch != "tiny":
        raise SystemExit(f"--arch {args.arch} is full size: run it on a GPU, or use --arch tiny")
    return device, torch.bfloat16 if device.type == "cuda" else torch.float32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=ARCHS, default="tiny")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=1, help="requests, each with CFG (2 rows)")
    parser.add_argument("--cfg-parallel", default="1,2")
    parser.add_argument("--backends", default="sdpa")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device, _ = devices(args)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}; arch {args.arch}; {args.size}px; {args.batch} request(s) with CFG")
    results = []
    for backend in args.backends.split(","):
        try:
            resolve_attention_backend(backend, device)
        except ValueError as exc:
            print(f"{backend:9s} unavailable: {exc}")
            continue
        for size in (int(s) for s in args.cfg_parallel.split(",")):
            median = single(args, backend) if size == 1 else parallel(args, backend)
            results.append({"backend": backend, "cfg_parallel": size, "median_ms": median})
            print(
                f"{backend:9s} cfg-parallel {size}: {median:9.2f} ms/step, median of {args.repeats}"
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"device": name, "args": vars(args) | {"json": None}, "results": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
