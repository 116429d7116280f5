"""Medians over repeated `benchmarks.compare` runs of one workload: omni's ratios per load level.

    python -m benchmarks.medians run1/compare-mixed-steps.json run2/... run3/...

Each run's ratio (omni over the baseline, measured side by side in that run) is computed first,
then the median over runs is reported, with every run's ratio beside it, as a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.compare import matching_level, read_runs
from benchmarks.report import RunResult


def run_ratios(runs: list[RunResult], omni: str, baseline: str) -> dict[str, dict[str, float]]:
    """{level label: {metric: omni / baseline}} for one compare run."""
    by_label = {r.label: r for r in runs}
    ours, theirs = by_label[omni], by_label[baseline]
    ratios = {}
    for level in ours.levels:
        other = matching_level(theirs, level)
        if other is None or not other.images_per_s:
            continue
        label = f"c={level.load:g}" if level.mode == "concurrency" else f"{level.load:g} req/s"
        ratios[label] = {
            "throughput": level.images_per_s / other.images_per_s,
            "p50": level.latency.p50 / other.latency.p50,
            "p99": level.latency.p99 / other.latency.p99,
            "batch": level.mean_batch or 0.0,
        }
    return ratios


def table(paths: list[Path], omni: str, baseline: str) -> str:
    per_run = [run_ratios(read_runs(path), omni, baseline) for path in paths]
    levels = list(dict.fromkeys(label for run in per_run for label in run))
    lines = [
        f"| load | throughput {omni} / {baseline} | p50 | p99 | requests per forward |",
        "|---|---|---|---|---|",
    ]
    for label in levels:
        cells = []
        for metric in ("throughput", "p50", "p99", "batch"):
            values = [run[label][metric] for run in per_run if label in run]
            runs = ", ".join(f"{v:.2f}" for v in values)
            suffix = "" if metric == "batch" else "x"
            cells.append(f"**{statistics.median(values):.2f}{suffix}** ({runs})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", type=Path, nargs="+", help="compare-<workload>.json of each run")
    parser.add_argument("--omni", default="omni")
    parser.add_argument("--baseline", default="baseline-batched")
    args = parser.parse_args()
    print(table(args.paths, args.omni, args.baseline))


if __name__ == "__main__":
    main()
