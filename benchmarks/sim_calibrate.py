"""How much slower work runs inside a loaded omni.serve than timed alone: the profile's
`slowdown`, solved so that the simulator predicts what a real server did in a closed loop.

    python -m benchmarks.sim_calibrate benchmarks/profiles/cpu-omni-tiny.json   # solve again

Or `step_overhead_ms` and `slowdown` together, fitted to omni's median images/s over several
benchmarks.compare runs of one workload (the other workloads then validate out of sample):

    python -m benchmarks.sim_calibrate benchmarks/profiles/cpu-omni-tiny.json \
        --fit-to run*/compare-mixed-steps.json --workload mixed-steps --size-scale 0.125 \
        --step-scale 0.2
"""

from __future__ import annotations

import asyncio
import statistics
from dataclasses import replace

import torch

from benchmarks.report import RunResult
from benchmarks.sim_measure import PROMPT


def measure_server(model: str, side: int, count: int = 24, load: int = 8) -> dict[str, float]:
    """A real omni.serve (no start-up profile: no token budget): one request at a time, the
    client's latency less the server's x-inference-time-s (HTTP both ways, JSON, PNG, event
    loop), median over `count`; then `load` clients closed-loop: images/s."""
    import sys
    import tempfile
    from pathlib import Path

    import aiohttp

    from benchmarks.client import send
    from benchmarks.compare import ServerLaunch, own_storage, running
    from benchmarks.load import closed_loop
    from benchmarks.workload import RequestClass, RequestSpec

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "omni.serve", "--model", model, "--port", str(port),
                "--profile-seconds", "0", *own_storage([])]  # fmt: skip

    spec = RequestSpec(RequestClass("probe", 1, side, side, 4), PROMPT, 0)

    async def measure(url: str) -> dict[str, float]:
        async with aiohttp.ClientSession() as session:
            records = [await send(session, url, spec) for _ in range(count + 2)]
            overheads = [r.latency_s - r.inference_time_s for r in records[2:] if r.ok]
            specs = [spec] * (12 * load)

            async def one(s: RequestSpec):
                return await send(session, url, s)

            await closed_loop(one, specs[:load], load, 60.0)  # warm-up
            loaded = await closed_loop(one, specs, load, 60.0)
        duration = max(r.end for r in loaded) - min(r.start for r in loaded)
        return {
            "http_overhead_ms_at_c1": statistics.median(overheads) * 1000,
            "closed_loop_clients": load,
            "closed_loop_requests": len(specs),
            "closed_loop_images_per_s": sum(r.ok for r in loaded) / duration,
        }

    with tempfile.TemporaryDirectory() as logs:
        launch = ServerLaunch("omni-probe", command)
        with running(launch, Path(logs), 300.0, torch.get_num_threads()) as url:
            return asyncio.run(measure(url))


def calibrate_slowdown(profile: dict, server: dict, side: int) -> float:
    """The factor on every simulated cost at which the simulator predicts the images/s that
    the real server showed in `measure_server`'s closed loop (bisection on a log scale)."""
    from benchmarks.sim_profile import parse_profile
    from benchmarks.sim_run import LevelPlan, SimOptions, server_factory, simulate_level
    from benchmarks.workload import RequestClass, RequestSpec, Workload

    probe = RequestClass("probe", 1, side, side, 4)
    workload = Workload("probe", (probe,))
    load = server["closed_loop_clients"]
    specs = [RequestSpec(probe, PROMPT, 0)] * server["closed_loop_requests"]
    plan = LevelPlan("concurrency", load, specs, specs[:load])
    options = SimOptions(max_num_batched_tokens=None, profile_seconds=0)

    def images_per_s(slowdown: float) -> float:
        model = parse_profile({**profile, "slowdown": slowdown})
        records, _ = simulate_level(model, workload, server_factory("omni-fcfs", model, options),
                                    plan)  # fmt: skip
        return len(records) / (max(r.end for r in records) - min(r.start for r in records))

    low, high = 0.25, 16.0
    for _ in range(30):
        middle = (low * high) ** 0.5
        if images_per_s(middle) > server["closed_loop_images_per_s"]:
            low = middle
        else:
            high = middle
    return round((low * high) ** 0.5, 4)


def recalibrate(path: str) -> None:
    """Solve the slowdown again from a profile's stored server figures (after a model change)."""
    import json
    from pathlib import Path

    file = Path(path)
    profile = json.loads(file.read_text())
    side = profile["default_size"][0]
    profile["slowdown"] = calibrate_slowdown(profile, profile["server_measured"], side)
    file.write_text(json.dumps(profile, indent=1) + "\n")
    print(f"{file}: slowdown {profile['slowdown']}")


COARSE = (1.0, 0.1)  # grid steps of (step_overhead_ms, slowdown), then half of each around the best
OVERHEADS_MS = [COARSE[0] * i for i in range(10)]  # 0 to 9 ms
SLOWDOWNS = [round(0.8 + COARSE[1] * i, 2) for i in range(9)]  # 0.8 to 1.6


def fit_step_costs(path: str, compare_files: list[str], workload_argv: list[str]) -> None:
    """The (step_overhead_ms, slowdown) whose simulated medians of images/s are nearest the
    measured medians, every server at every level (squared log error), written to the file: a
    coarse grid, then a finer one around its best. `slowdown` stretches both servers' work,
    `step_overhead_ms` only omni's engine steps. Each omni run is simulated with the token
    budget its own server chose (runs that chose the same one are simulated once)."""
    import json
    import math
    import tempfile
    from pathlib import Path

    from benchmarks.compare import read_runs
    from benchmarks.report import load_label
    from benchmarks.sim_validate import simulate_like
    from benchmarks.simulate import build_parser, options_from_args

    def key(run: RunResult) -> tuple[str, int | None]:
        return run.label, (run.server_stats or {}).get("max_num_batched_tokens")

    file = Path(path)
    profile = json.loads(file.read_text())
    runs = [run for name in compare_files for run in read_runs(Path(name))]
    labels = sorted({run.label for run in runs})
    levels = range(len(runs[0].levels))

    def medians(results: list[RunResult]) -> list[float]:
        return [
            statistics.median(r.levels[i].images_per_s for r in results if r.label == label)
            for label in labels
            for i in levels
        ]

    measured = medians(runs)
    distinct = {key(run): run for run in runs}
    tried: dict[tuple[float, float], float] = {}

    with tempfile.TemporaryDirectory() as folder:
        trial = Path(folder) / "profile.json"
        args = build_parser().parse_args([*workload_argv, "--profile", str(trial)])
        options = options_from_args(args)

        def error(overhead: float, slowdown: float) -> float:
            point = (round(overhead, 3), round(slowdown, 3))
            if point not in tried:
                changed = {**profile, "step_overhead_ms": point[0], "slowdown": point[1]}
                trial.write_text(json.dumps(changed))
                guess = {k: simulate_like(run, args, options) for k, run in distinct.items()}
                predicted = [replace(guess[key(run)], label=run.label) for run in runs]
                tried[point] = sum(
                    math.log(p / m) ** 2 for p, m in zip(medians(predicted), measured, strict=True)
                )
            return tried[point]

        best = min(((o, s) for o in OVERHEADS_MS for s in SLOWDOWNS), key=lambda x: error(*x))
        step_o, step_s = COARSE[0] / 2, COARSE[1] / 2
        fine = [(max(0.0, best[0] + i * step_o), max(0.05, best[1] + j * step_s))
                for i in (-1, 0, 1) for j in (-1, 0, 1)]  # fmt: skip
        best = min(fine, key=lambda x: error(*x))
        print(f"{file}: step_overhead_ms {best[0]:g}, slowdown {best[1]:g} "
              f"(error {error(*best):.4f})")  # fmt: skip
    # What the profile measured stays beside what was fitted (a second fit keeps the first's).
    profile.setdefault("step_overhead_ms_measured", profile["step_overhead_ms"])
    profile.setdefault("slowdown_from_probe", profile["slowdown"])
    profile["step_overhead_ms"], profile["slowdown"] = round(best[0], 3), round(best[1], 3)
    loads = ", ".join(load_label(level) for level in runs[0].levels)
    profile["calibration"] = (
        f"step_overhead_ms and slowdown fitted together by benchmarks.sim_calibrate --fit-to "
        f"(grid {COARSE[0]:g} ms x {COARSE[1]:g}, then half that around the best) to the median "
        f"images/s of {' and '.join(labels)} at {loads} over {len(compare_files)} runs "
        f"({', '.join(compare_files)}), each omni run simulated with its own token budget; "
        f"{' '.join(workload_argv)}. step_overhead_ms_measured is the scheduler's own cost a "
        f"step; slowdown_from_probe the slowdown solved from server_measured alone."
    )
    file.write_text(json.dumps(profile, indent=1) + "\n")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="solve a profile's slowdown, or fit step costs")
    parser.add_argument("profile")
    parser.add_argument("--fit-to", nargs="+", help="compare JSONs of one workload")
    known, rest = parser.parse_known_args()
    if known.fit_to:
        fit_step_costs(known.profile, known.fit_to, rest)
    else:
        recalibrate(known.profile)
