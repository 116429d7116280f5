"""omni against the servers a user would otherwise build, same model, same workload, one command.

    python -m benchmarks.compare --model omni-tiny --workload uniform-512 \\
        --size-scale 0.125 --step-scale 0.2 --concurrency 1 8

Starts each server in turn as a subprocess on a free 127.0.0.1 port (never two at once, so they
do not share the device or the CPU), runs the load generator against it, stops it, and finally
prints throughput and latency for each and omni's ratios over each baseline. JSON, the printed
summary and PNG plots go to --output-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.metrics import LevelResult
from benchmarks.report import RunResult, load_label, plot, run_from_dict, table, to_json
from benchmarks.serve import add_load_arguments, benchmark, plan_from_args, workload_from_args

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("omni", "baseline-sequential", "baseline-batched")
HEALTH_POLL_S = 0.5
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ServerLaunch:
    label: str
    command: Callable[[int], list[str]]  # port -> argv


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_STORAGE: list[tempfile.TemporaryDirectory] = []  # removed when this process exits


def own_storage(extra: list[str]) -> list[str]:
    """A fresh --storage-path unless `extra` names one: the default is one server's alone, and
    another omni on this machine (a developer's, a test's) would hold it."""
    if any(arg.split("=")[0] == "--storage-path" for arg in extra):
        return []
    if not _STORAGE:
        _STORAGE.append(tempfile.TemporaryDirectory(prefix="omni-bench-"))
    return ["--storage-path", tempfile.mkdtemp(dir=_STORAGE[0].name)]


def launches(args: argparse.Namespace) -> list[ServerLaunch]:
    python = sys.executable
    omni_extra = shlex.split(args.omni_args)
    baseline_extra = shlex.split(args.baseline_args)

    def omni(port: int) -> list[str]:
        return [
            python, "-m", "omni.serve", "--model", args.model, "--port", str(port),
            *own_storage(omni_extra), *omni_extra,
        ]  # fmt: skip

    def baseline(mode: str) -> Callable[[int], list[str]]:
        def command(port: int) -> list[str]:
            return [
                python, "-m", "benchmarks.baseline_server", "--model", args.model,
                "--mode", mode, "--port", str(port), *baseline_extra,
            ]  # fmt: skip

        return command

    known = {
        args.omni_label: omni,
        "baseline-sequential": baseline("sequential"),
        "baseline-batched": baseline("batched"),
    }
    labels = [args.omni_label if label == "omni" else label for label in args.servers]
    return [ServerLaunch(label, known[label]) for label in labels]


def wait_healthy(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(HEALTH_POLL_S)
    raise TimeoutError(f"the server was not healthy after {timeout_s:.0f} s:\n{tail(log_path)}")


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


@contextmanager
def running(
    launch: ServerLaunch, log_dir: Path, startup_timeout_s: float, torch_threads: int | None
) -> Iterator[str]:
    """Start the server, yield its URL once /health answers 200, stop it on the way out."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{launch.label}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if torch_threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(torch_threads)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            launch.command(port), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        )
        try:
            wait_healthy(url, process, log_path, startup_timeout_s)
            yield url
        finally:
            stop(process)


def shared_standalone(results: Sequence[RunResult]) -> dict[str, float]:
    """Per class, the fastest standalone latency any server showed: one yardstick for all."""
    classes = {name for r in results for name in r.standalone_s}
    return {
        name: min(r.standalone_s[name] for r in results if name in r.standalone_s)
        for name in sorted(classes)
    }


def read_runs(path: Path) -> list[RunResult]:
    return [run_from_dict(data) for data in json.loads(path.read_text())]


def ratio(numerator: float | None, denominator: float | None) -> str:
    if not numerator or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def matching_level(result: RunResult, level: LevelResult) -> LevelResult | None:
    for other in result.levels:
        if (other.mode, other.load) == (level.mode, level.load):
            return other
    return None


def ratios(omni: RunResult, baselines: Sequence[RunResult]) -> str:
    """omni / baseline per level: throughput (higher is better) and latency (lower is better)."""
    lines = []
    for baseline in baselines:
        lines.append(f"{omni.label} / {baseline.label}:")
        for level in omni.levels:
            other = matching_level(baseline, level)
            if other is None or not level.latency or not other.latency:
                continue
            throughput = ratio(level.images_per_s, other.images_per_s)
            p50 = ratio(level.latency.p50, other.latency.p50)
            p99 = ratio(level.latency.p99, other.latency.p99)
            lines.append(
                f"  {load_label(level):>11}: throughput {throughput} (higher is better),"
                f" latency p50 {p50}, p99 {p99} (lower is better)"
            )
    return "\n".join(lines)


def describe_device(torch_threads: int | None) -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    processor = platform.processor() or platform.machine()
    threads = torch_threads or torch.get_num_threads()
    return f"CPU only ({processor}, {os.cpu_count()} cores, {threads} torch threads per server)"


def summary_text(model: str, device: str, workload_label: str, results: list[RunResult]) -> str:
    lines = [
        f"device: {device}",
        f"model: {model}; workload: {workload_label}",
        "standalone latency per class (s):",
        *(
            f"  {r.label}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.standalone_s.items())
            for r in results
        ),
        "SLO k=N: share of requests done within N x the fastest standalone latency of their"
        " class on any server",
        "",
        table(results),
    ]
    baselines = [r for r in results if r.label.startswith("baseline")]
    for omni in (r for r in results if r.label.startswith("omni")):
        if baselines:
            lines += ["", ratios(omni, baselines)]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="omni-tiny", help="built-in name or pipeline dir")
    parser.add_argument("--servers", nargs="*", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--omni-args", default="", help="extra flags for omni.serve")
    parser.add_argument("--omni-label", default="omni", help="e.g. omni-mb32 for a variant")
    parser.add_argument("--baseline-args", default="", help="extra flags for the baselines")
    parser.add_argument(
        "--include",
        type=Path,
        nargs="*",
        default=[],
        help="earlier compare JSON files whose runs join this summary (not rerun)",
    )
    parser.add_argument("--startup-timeout", type=float, default=900.0)
    parser.add_argument(
        "--torch-threads", type=int, help="CPU threads per server (OMP_NUM_THREADS)"
    )
    parser.add_argument("--output-dir", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    workload = workload_from_args(args)
    plan = plan_from_args(args)

    from omni.models import resolve_model_dir

    resolve_model_dir(args.model)  # a built-in model is built once, here, not in each server
    load_before = os.getloadavg()[0]
    results = [run for path in args.include for run in read_runs(path)]
    for launch in launches(args):
        print(f"== {launch.label}", file=sys.stderr)
        logs = args.output_dir / "logs"
        with running(launch, logs, args.startup_timeout, args.torch_threads) as url:
            results.append(asyncio.run(benchmark(url, workload, plan, launch.label)))

    reference = shared_standalone(results)
    for result in results:
        for level in result.levels:
            level.rescore_slo(reference, plan.slo_factors)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"compare-{workload.name}"
    stem.with_name(stem.name + ".json").write_text(to_json(results) + "\n")
    scale = f" (sizes x{args.size_scale:g}, steps x{args.step_scale:g})"
    workload_label = workload.name + (scale if (args.size_scale, args.step_scale) != (1, 1) else "")
    device = describe_device(args.torch_threads)
    load = f"1-min load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    text = summary_text(args.model, f"{device}; {load}", workload_label, results)
    print(text)
    stem.with_name(stem.name + ".txt").write_text(text + "\n")
    written = plot(results, stem, f"{args.model}, {workload_label}\n{device}")
    print(f"wrote {stem}.json, {stem}.txt, " + ", ".join(map(str, written)), file=sys.stderr)


if __name__ == "__main__":
    main()
