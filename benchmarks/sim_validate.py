"""Predicted against measured: simulate what a benchmarks.compare run measured, at its settings.

Every server in the compare JSON is simulated with the same workload flags (pass the same
--workload/--size-scale/--step-scale), the same levels and request counts, the same seeds and
warm-ups, and for omni the policy and token budget its /v1/stats reported.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import replace

from benchmarks.compare import read_runs
from benchmarks.metrics import LevelResult
from benchmarks.report import RunResult, load_label, table
from benchmarks.serve import workload_from_args
from benchmarks.sim_profile import load_profile
from benchmarks.sim_run import LevelPlan, SimOptions, simulate_run
from benchmarks.workload import sample_requests

METRICS: dict[str, Callable[[LevelResult], float | None]] = {
    "img/s": lambda level: level.images_per_s,
    "p50 s": lambda level: level.latency.p50 if level.latency else None,
    "p99 s": lambda level: level.latency.p99 if level.latency else None,
    "1st-step p50 s": lambda level: level.queue_time.p50 if level.queue_time else None,
}


def plans_like(measured: RunResult, args: argparse.Namespace) -> list[LevelPlan]:
    """The levels of a measured run, with the requests benchmarks.serve sent in each."""
    from benchmarks.load import poisson_arrivals

    workload = workload_from_args(args)
    plans = []
    for level in measured.levels:
        specs = sample_requests(workload, level.num_requests, args.seed)
        if level.mode == "concurrency":
            concurrency = int(level.load)
            warmup = sample_requests(workload, args.warmup_rounds * concurrency, args.seed + 1)
            plans.append(LevelPlan("concurrency", level.load, specs, warmup))
        else:
            arrivals = poisson_arrivals(level.load, len(specs), args.seed, 300.0)
            plans.append(LevelPlan("rate", level.load, specs, arrivals=arrivals))
    return plans


def simulate_like(measured: RunResult, args: argparse.Namespace, options: SimOptions):
    profile = load_profile(args.profile)
    label = measured.label
    if not label.startswith("baseline"):
        stats = measured.server_stats or {}
        options = replace(options, max_num_batched_tokens=stats.get("max_num_batched_tokens"))
        label = f"omni-{stats.get('scheduling_policy', 'fcfs')}"
    result = simulate_run(
        label,
        profile,
        workload_from_args(args),
        options,
        plans_like(measured, args),
        args.standalone_repeats,
        args.seed,
        args.slo_factors,
    )
    result.label = f"{measured.label} (sim)"
    return result


def error_percent(predicted: float | None, measured: float | None) -> str:
    if predicted is None or not measured:
        return "-"
    return f"{(predicted - measured) / measured:+.0%}"


def comparison_rows(measured: RunResult, predicted: RunResult) -> list[dict]:
    rows = []
    for level, guess in zip(measured.levels, predicted.levels, strict=True):
        for name, metric in METRICS.items():
            rows.append(
                {
                    "server": measured.label,
                    "load": load_label(level),
                    "metric": name,
                    "predicted": metric(guess),
                    "measured": metric(level),
                    "error": error_percent(metric(guess), metric(level)),
                }
            )
    return rows


def format_rows(rows: list[dict]) -> str:
    header = (
        f"{'server':<18} {'load':>9} {'metric':<15} {'predicted':>10} {'measured':>10} {'error':>7}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        predicted = "-" if row["predicted"] is None else f"{row['predicted']:.3f}"
        measured = "-" if row["measured"] is None else f"{row['measured']:.3f}"
        lines.append(
            f"{row['server']:<18} {row['load']:>9} {row['metric']:<15} {predicted:>10} "
            f"{measured:>10} {row['error']:>7}"
        )
    return "\n".join(lines)


def validate(args: argparse.Namespace) -> None:
    from benchmarks.simulate import options_from_args

    measured_runs = read_runs(args.validate)
    options = options_from_args(args)
    rows, predicted_runs = [], []
    for measured in measured_runs:
        predicted = simulate_like(measured, args, options)
        predicted_runs.append(predicted)
        rows += comparison_rows(measured, predicted)
    text = "\n\n".join(
        [
            f"profile {args.profile} against {args.validate}",
            format_rows(rows),
            "measured:\n" + table(measured_runs),
            "SIMULATED:\n" + table(predicted_runs),
        ]
    )
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"validate-{args.validate.stem}"
    stem.with_name(stem.name + ".txt").write_text(text + "\n")
    stem.with_name(stem.name + ".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {stem}.txt and {stem}.json", file=sys.stderr)
