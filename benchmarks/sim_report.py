"""The H100 prediction matrix: every model x workload, omni's policies and both baselines,
closed loop at 8, 32, 128 clients and Poisson arrivals up to saturation; SIMULATED.md.

    python -m benchmarks.sim_report --output-dir benchmarks/results/sim

The Poisson rates of a model and workload are fractions of the highest request rate any server
sustained at 128 clients (its saturation), so each sits at the same relative load.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from benchmarks import simulate
from benchmarks.report import plot, run_from_dict, table

PROFILES = ("h100-flux.1-dev", "h100-qwen-image")
WORKLOADS = ("mixed-steps", "mixed-resolution", "uniform-512")
RATE_SHARES = (0.5, 0.8, 0.95)
POLICIES = ["--policies", "fcfs", "shortest", "priority", "--baselines", "batched", "sequential"]


def run(argv: list[str], commands: list[str]) -> list[dict]:
    commands.append("python -m benchmarks.simulate " + shlex.join(argv))
    simulate.main(argv)
    out = Path(argv[argv.index("--output-dir") + 1])
    profile, workload = argv[argv.index("--profile") + 1], argv[argv.index("--workload") + 1]
    return json.loads((out / f"sim-{profile}-{workload}.json").read_text())


def rows(runs: list[dict]) -> list[str]:
    lines = []
    for result in runs:
        for level in result["levels"]:
            load = (
                f"c={level['load']:g}"
                if level["mode"] == "concurrency"
                else (f"{level['load']:g} req/s")
            )
            nan = float("nan")
            latency, first = level["latency"] or {}, level["queue_time"] or {}
            slo = level["slo_attainment"]
            failed = level["num_requests"] - level["num_ok"]
            lines.append(
                f"| {result['label']} | {load} | {level['images_per_s']:.3f} | "
                f"{latency.get('p50', nan):.1f} | {latency.get('p99', nan):.1f} | "
                f"{first.get('p50', nan):.1f} | "
                + " | ".join(f"{slo.get(k, 0):.0%}" for k in ("k=2", "k=5", "k=10"))
                + f" | {failed} |"
            )
    return lines


HEADER = (
    "| server (SIMULATED) | load | img/s | p50 s | p99 s | 1st-step p50 s | SLO k=2 | SLO k=5 "
    "| SLO k=10 | failed |\n|---|---|---|---|---|---|---|---|---|---|"
)


def write_merged(directory: str, profile: str, workload: str, merged: list[dict]) -> None:
    """Closed-loop and Poisson levels of each server in one JSON, text table and plot set."""
    stem = Path(directory, f"sim-{profile}-{workload}")
    runs = [run_from_dict(data) for data in merged]
    title = f"SIMULATED, not measured: {profile}, {workload}"
    plot(runs, stem, title)
    stem.with_name(stem.name + ".txt").write_text(title + "\n\n" + table(runs) + "\n")
    stem.with_name(stem.name + ".json").write_text(json.dumps(merged, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="benchmarks/results/sim")
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES))
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--num-requests", type=int, default=10000, help="per level")
    args = parser.parse_args()
    commands: list[str] = []
    sections = []
    for profile in args.profiles:
        for workload in args.workloads:
            base = ["--profile", profile, "--workload", workload, "--num-requests",
                    str(args.num_requests), *POLICIES, "--output-dir", args.output_dir]  # fmt: skip
            closed = run([*base, "--concurrency", "8", "32", "128"], commands)
            saturation = max(lv["requests_per_s"] for r in closed for lv in r["levels"])
            rates = [f"{saturation * share:.3g}" for share in RATE_SHARES]
            opened = run([*base, "--concurrency", "--rate", *rates], commands)
            merged = [
                {**c, "levels": c["levels"] + o["levels"]}
                for c, o in zip(closed, opened, strict=True)
            ]
            write_merged(args.output_dir, profile, workload, merged)
            sections.append(
                f"### {profile}, {workload}\n\nsaturation (most req/s at 128 clients): "
                f"{saturation:.3f} req/s; Poisson rates {', '.join(rates)} req/s\n\n"
                + HEADER
                + "\n"
                + "\n".join(rows(merged))
            )
            print(f"done {profile} {workload}", file=sys.stderr)
    text = "\n\n".join(sections)
    Path(args.output_dir, "tables.md").write_text(text + "\n")
    Path(args.output_dir, "commands.txt").write_text("\n".join(commands) + "\n")


if __name__ == "__main__":
    main()
