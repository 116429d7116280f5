"""What per-row LoRA costs a forward: ms per transformer forward of one batch with 0, 1, 4 and 8
distinct adapters among its rows, beside the same model without LoRA hooks.

    python -m benchmarks.lora_overhead --arch flux-dev --size 1024 --batch 8 --rank 16
    python -m benchmarks.lora_overhead --arch flux-dev --shrink --size 256   # CPU-sized

The transformer is built from its published config with random weights (benchmarks.archs), and
each adapter is random rank-`--rank` factors on every Linear of its blocks (what a LoRA trained
on attention and MLP layers touches). Modes are timed alternately, one forward each per round, and
each mode's median over the rounds is reported, so drift on a shared machine hits them alike.
On a CPU the model runs on one thread and is timed by the process's CPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from benchmarks import archs
from benchmarks.engine import synchronize
from omni.lora.rows import assigned, install_hooks
from omni.lora.weights import LoraLayer, LoraWeights


def random_adapter(model: torch.nn.Module, rank: int, seed: int) -> LoraWeights:
    generator = torch.Generator().manual_seed(seed)
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "blocks." in name:
            weight = module.weight
            down, up = (
                (torch.randn(*shape, generator=generator) * 0.01).to(weight.device, weight.dtype)
                for shape in ((rank, module.in_features), (module.out_features, rank))
            )
            layers[name] = LoraLayer(down, up, 1.0)
    return LoraWeights(("random", seed), f"random-{seed}", layers, rank)


def row_stacks(adapters: list[LoraWeights], batch: int, distinct: int) -> list[tuple]:
    """`batch` rows over `distinct` adapters (rows in contiguous runs, as requests' CFG rows are
    not), or no adapter at all when distinct is 0."""
    if distinct == 0:
        return [()] * batch
    return [((adapters[row * distinct // batch], 1.0),) for row in range(batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="flux-dev", choices=archs.ARCH_NAMES)
    parser.add_argument("--shrink", action="store_true", help="few layers, small widths (CPU)")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--adapters", default="0,1,4,8", help="distinct adapters per batch")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # On a CPU shared with other work, wall time measures the neighbours: one thread, timed by
    # the process's own CPU time. A GPU is timed by the wall clock, synchronized.
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    if device.type == "cpu":
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    arch = archs.get_arch(args.arch)
    if args.shrink:
        arch = archs.shrink(arch)
    model = archs.build(arch, device, dtype)
    inputs = archs.make_inputs(arch, args.batch, args.size, args.size, 1, device, dtype)
    counts = [int(n) for n in args.adapters.split(",")]
    adapters = [random_adapter(model, args.rank, seed) for seed in range(max([*counts, 1]))]

    def forward(stacks: list[tuple] | None) -> float:
        start = clock()
        if stacks is None:
            model(**inputs)
        else:
            with assigned(stacks):
                model(**inputs)
        synchronize(device)
        return (clock() - start) * 1000

    hooks: list = []
    modes = {"no hooks": None} | {
        f"{n} adapters": row_stacks(adapters, args.batch, n) for n in counts
    }
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with torch.inference_mode():
        for round_index in range(args.warmup + args.rounds):
            for mode, stacks in modes.items():
                if stacks is None:  # the model as served without LoRA: no hooks at all
                    for hook in hooks:
                        hook.remove()
                    hooks = []
                elif not hooks:
                    hooks = install_hooks(model)
                elapsed = forward(stacks)
                if round_index >= args.warmup:
                    times[mode].append(elapsed)
    base = statistics.median(times["no hooks"])
    print(
        f"{arch.name} {args.size}x{args.size}, batch {args.batch}, rank {args.rank}, "
        f"{device.type} {str(dtype).removeprefix('torch.')}, medians of {args.rounds} rounds"
        + (" (CPU time, one thread)" if device.type == "cpu" else "")
    )
    print("| rows' adapters | ms per forward | vs no hooks |")
    print("|---|---|---|")
    results = {}
    for mode, values in times.items():
        median = statistics.median(values)
        results[mode] = median
        print(f"| {mode} | {median:.1f} | {median / base:.3f}x |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
