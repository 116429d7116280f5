"""The simulator's validation over several runs of one workload: a simulated run fed back as if
measured is predicted exactly, servers matched by name whatever order a run started them in,
and a spread of runs compared through its medians; the step-cost fit finds the costs a run was
simulated with."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import simulate
from benchmarks.sim_calibrate import fit_step_costs
from tests.benchmarks.test_simulate import profile_data

WORKLOAD = ["--workload", "mixed-steps", "--size-scale", "0.125", "--step-scale", "0.2"]


def simulated_run(tmp_path: Path, **changes: float) -> Path:
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(profile_data(**changes)))
    load = ["--concurrency", "4", "--num-requests", "16", "--baselines", "batched"]
    simulate.main(["--profile", str(profile), *WORKLOAD, *load, "--output-dir", str(tmp_path)])
    return profile


def validate(profile: Path, output: Path, compare_files: list[str]) -> None:
    flags = ["--profile", str(profile), *WORKLOAD, "--output-dir", str(output)]
    simulate.main([*flags, "--validate", *compare_files])


def test_runs_fed_back_as_measured_are_predicted_exactly_in_either_server_order(tmp_path):
    profile = simulated_run(tmp_path)
    (result,) = tmp_path.glob("sim-test-*.json")
    runs = json.loads(result.read_text())
    first, second = tmp_path / "run1/compare.json", tmp_path / "run2/compare.json"
    for path, order in [(first, runs), (second, runs[::-1])]:
        path.parent.mkdir()
        path.write_text(json.dumps(order))

    validate(profile, tmp_path / "out", [str(first), str(second)])

    rows = json.loads((tmp_path / "out/validate-compare.json").read_text())
    servers = {row["server"] for row in rows}
    assert servers == {"omni-fcfs", "baseline-batched"}
    throughput = [row for row in rows if row["metric"] == "img/s"]
    assert len(throughput) == 2 and all(row["runs"] == 2 for row in throughput)
    for row in throughput:
        assert row["predicted"] == row["measured"] > 0, row


def test_the_medians_of_the_runs_are_compared(tmp_path):
    profile = simulated_run(tmp_path)
    (result,) = tmp_path.glob("sim-test-*.json")
    runs = json.loads(result.read_text())
    paths = []
    for index, factor in enumerate([0.5, 1.0, 4.0]):  # measured at half, the same, four times
        changed = json.loads(json.dumps(runs))
        for run in changed:
            for level in run["levels"]:
                level["images_per_s"] *= factor
        path = tmp_path / f"run{index}/compare.json"
        path.parent.mkdir()
        path.write_text(json.dumps(changed))
        paths.append(str(path))

    validate(profile, tmp_path / "out", paths)

    rows = json.loads((tmp_path / "out/validate-compare.json").read_text())
    for row in (row for row in rows if row["metric"] == "img/s"):
        assert row["measured"] == row["predicted"]  # the middle run's, not the mean's 1.83x
        assert row["error"] == "+0%"


def test_the_fit_finds_the_step_costs_a_run_was_simulated_with(tmp_path):
    truth = tmp_path / "truth"
    truth.mkdir()
    simulated_run(truth, step_overhead_ms=2.0, slowdown=1.2)
    (result,) = truth.glob("sim-test-*.json")
    measured = tmp_path / "run1/compare.json"
    measured.parent.mkdir()
    measured.write_text(result.read_text())
    start = tmp_path / "profile.json"
    start.write_text(json.dumps(profile_data(step_overhead_ms=0.0, slowdown=1.0)))

    fit_step_costs(str(start), [str(measured)], WORKLOAD)

    fitted = json.loads(start.read_text())
    assert (fitted["step_overhead_ms"], fitted["slowdown"]) == (2.0, 1.2)
    assert "fitted together" in fitted["calibration"]
