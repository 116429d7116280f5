"""Simulated serving benchmark: omni's real Scheduler and the baselines on a measured cost model.

    python -m benchmarks.simulate --profile cpu-omni-tiny --workload mixed-steps \\
        --size-scale 0.125 --step-scale 0.2 --concurrency 8 32 --rate 20 40 \\
        --num-requests 10000 --policies fcfs shortest priority \\
        --baselines batched sequential
    python -m benchmarks.simulate --profile cpu-omni-tiny --workload mixed-steps \\
        --size-scale 0.125 --step-scale 0.2 --validate /tmp/simval/compare-mixed-steps.json

A discrete-event simulation on a simulated clock: an engine loop that runs one forward at a time
(omni.scheduler.Scheduler decides every step; its cost comes from the profile), the encode and
decode workers beside it (batched as omni.engine.stages batches them), each response's PNG and
HTTP cost, and closed-loop clients or Poisson arrivals exactly as benchmarks.serve sends them.
The baselines run under the same cost model: request-level batching as
benchmarks.baseline_server does it (one pipeline call: encode, every step, decode; up to 8
requests of identical parameters) and one request at a time. Every figure is a prediction;
labels, tables and plots say "simulated".
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.compare import shared_standalone
from benchmarks.report import RunResult, plot, table, to_json
from benchmarks.serve import add_load_arguments, workload_from_args
from benchmarks.sim_profile import load_profile
from benchmarks.sim_run import SimOptions, level_plans, scheduler_config, simulate_run
from omni.scheduler import POLICIES

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_NAMES = ("batched", "sequential")


def options_from_args(args: argparse.Namespace) -> SimOptions:
    return SimOptions(
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_batch_size=args.max_batch_size,
        max_num_running=args.max_num_running,
        max_num_waiting=args.max_num_waiting,
        profile_seconds=args.profile_seconds,
        baseline_max_batch=args.baseline_max_batch,
    )


def strip_records(results: Sequence[RunResult]) -> None:
    for result in results:
        for level in result.levels:
            level.records = []


def run_simulation(args: argparse.Namespace) -> list[RunResult]:
    profile = load_profile(args.profile)
    workload = workload_from_args(args)
    options = options_from_args(args)
    plans = level_plans(
        workload,
        args.concurrency or [],
        args.rate,
        args.num_requests,
        args.seed,
        args.warmup_rounds,
        args.max_duration,
    )
    labels = [f"omni-{p}" for p in args.policies] + [f"baseline-{b}" for b in args.baselines]
    results = []
    for label in labels:
        started = time.perf_counter()
        results.append(
            simulate_run(
                label,
                profile,
                workload,
                options,
                plans,
                args.standalone_repeats,
                args.seed,
                args.slo_factors,
            )
        )
        print(f"simulated {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    reference = shared_standalone(results)
    for result in results:
        for level in result.levels:
            level.rescore_slo(reference, args.slo_factors)
    return results


def describe(args: argparse.Namespace) -> str:
    profile = load_profile(args.profile)
    workload = workload_from_args(args)
    options = options_from_args(args)
    budget = scheduler_config(profile, "fcfs", options).max_num_batched_tokens
    scale = ""
    if (args.size_scale, args.step_scale) != (1, 1):
        scale = f" (sizes x{args.size_scale:g}, steps x{args.step_scale:g})"
    return (
        f"SIMULATED with profile {profile.name} ({profile.device}; model {profile.model});"
        f" workload {workload.name}{scale}; omni max_batch_size {options.max_batch_size},"
        f" max_num_batched_tokens {budget} ({'given' if args.max_num_batched_tokens else 'knee'})"
    )


def plot_title(args: argparse.Namespace) -> str:
    profile, workload = load_profile(args.profile), workload_from_args(args)
    scale = ""
    if (args.size_scale, args.step_scale) != (1, 1):
        scale = f" (sizes x{args.size_scale:g}, steps x{args.step_scale:g})"
    return f"SIMULATED, not measured: {profile.name}, {workload.name}{scale}\n{profile.device}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-omni-tiny", help="a shipped name or a path")
    parser.add_argument("--policies", nargs="*", choices=list(POLICIES), default=["fcfs"])
    parser.add_argument("--baselines", nargs="*", choices=BASELINE_NAMES, default=[])
    parser.add_argument("--max-num-batched-tokens", type=int, help="default: the start-up knee")
    parser.add_argument("--max-batch-size", type=int, default=SimOptions().max_batch_size)
    parser.add_argument("--max-num-running", type=int, default=SimOptions().max_num_running)
    parser.add_argument("--max-num-waiting", type=int, default=SimOptions().max_num_waiting)
    parser.add_argument("--profile-seconds", type=float, default=SimOptions().profile_seconds)
    parser.add_argument("--baseline-max-batch", type=int, default=8)
    parser.add_argument(
        "--validate",
        type=Path,
        nargs="+",
        help="compare JSONs of one workload (runs of one sitting) to predict and compare with",
    )
    parser.add_argument("--keep-records", action="store_true", help="every request in the JSON")
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks/results/sim")
    add_load_arguments(parser)
    parser.set_defaults(max_duration=float("inf"))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.validate:
        from benchmarks.sim_validate import validate

        validate(args)
        return
    if not args.concurrency and not args.rate:
        args.concurrency = [8, 32]
    header = describe(args)
    print(header, file=sys.stderr)
    results = run_simulation(args)
    text = header + "\n\n" + table(results)
    print(text)
    workload = workload_from_args(args)
    stem = args.output_dir / f"sim-{load_profile(args.profile).name}-{workload.name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = plot(results, stem, plot_title(args))
    if not args.keep_records:
        strip_records(results)
    stem.with_name(stem.name + ".json").write_text(to_json(results) + "\n")
    stem.with_name(stem.name + ".txt").write_text(text + "\n")
    print(f"wrote {stem}.json, {stem}.txt, " + ", ".join(map(str, written)), file=sys.stderr)


if __name__ == "__main__":
    main()
