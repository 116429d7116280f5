"""Predicted against measured: simulate what benchmarks.compare runs measured, at their settings.

Every server in the compare JSON is simulated with the same workload flags (pass the same
--workload/--size-scale/--step-scale), the same levels and request counts, the same seeds and
warm-ups, and for omni the policy and token budget its /v1/stats reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Iterable
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


def comparison_rows(measured: list[RunResult], predicted: list[RunResult]) -> list[dict]:
    """Predicted against measured per server, level and metric; over several runs of one
    workload (one compare JSON each), the median prediction against the median measurement,
    each run simulated with its own server's settings (the token budget its profile chose)."""
    rows = []
    for index, level in enumerate(measured[0].levels):
        for name, metric in METRICS.items():
            guesses = present(metric(run.levels[index]) for run in predicted)
            values = present(metric(run.levels[index]) for run in measured)
            guess = statistics.median(guesses) if guesses else None
            value = statistics.median(values) if values else None
            rows.append(
                {
                    "server": measured[0].label,
                    "load": load_label(level),
                    "metric": name,
                    "predicted": guess,
                    "measured": value,
                    "error": error_percent(guess, value),
                    "runs": len(measured),
                }
            )
    return rows


def present(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


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

    # Per file, one RunResult per server, in the order that run started them.
    runs = [{run.label: run for run in read_runs(path)} for path in args.validate]
    options = options_from_args(args)
    rows, measured_all, predicted_all = [], [], []
    for label in runs[0]:
        measured = [results[label] for results in runs]
        predicted = [simulate_like(run, args, options) for run in measured]
        rows += comparison_rows(measured, predicted)
        measured_all += measured
        predicted_all += predicted
    sources = ", ".join(str(path) for path in args.validate)
    over = f"medians over {len(runs)} runs" if len(runs) > 1 else "one run"
    text = "\n\n".join(
        [
            f"profile {args.profile} against {sources} ({over})",
            format_rows(rows),
            "measured:\n" + table(measured_all),
            "SIMULATED:\n" + table(predicted_all),
        ]
    )
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"validate-{args.validate[0].stem}"
    stem.with_name(stem.name + ".txt").write_text(text + "\n")
    stem.with_name(stem.name + ".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {stem}.txt and {stem}.json", file=sys.stderr)
