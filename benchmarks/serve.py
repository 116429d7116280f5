"""Load generator for any server speaking /v1/images/generations (and /v1/videos/sync).

    python -m benchmarks.serve --url http://127.0.0.1:8000 --workload mixed-resolution \\
        --size-scale 0.0625 --step-scale 0.2 --concurrency 1 4 16 --rate 2 8

First each workload class runs alone (one warm-up request, then --standalone-repeats measured
ones, one at a time): its median is the class's standalone latency, the yardstick for SLO
attainment. Then each load level runs with the same seeded requests: closed loop for every
--concurrency (after --warmup-rounds unmeasured requests per client), open loop (Poisson
arrivals) for every --rate.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp

from benchmarks.client import check_local_url, send
from benchmarks.load import closed_loop, open_loop, poisson_arrivals
from benchmarks.metrics import LevelResult, summarize_level
from benchmarks.progress import ProgressBar
from benchmarks.report import RunResult, describe_classes, machine_meta, plot, table, to_json
from benchmarks.workload import Workload, load_workload, sample_requests, standalone_requests

STATS_PATH = "/v1/stats"


@dataclass(frozen=True, slots=True)
class LoadPlan:
    concurrencies: tuple[int, ...] = (1, 4)
    rates: tuple[float, ...] = ()
    num_requests: int = 32  # per level; closed loops send at least 3 per client
    max_duration_s: float = 300.0  # per level: no new request after this
    request_timeout_s: float = 600.0
    standalone_repeats: int = 3
    warmup_rounds: int = 1  # closed loops: one unmeasured request per client first
    slo_factors: tuple[float, ...] = (2.0, 5.0, 10.0)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.concurrencies and not self.rates:
            raise ValueError("give at least one concurrency or rate")
        if self.num_requests < 1 or self.standalone_repeats < 1:
            raise ValueError("num_requests and standalone_repeats must be at least 1")

    def level_size(self, concurrency: int | None = None) -> int:
        if concurrency is None:
            return self.num_requests
        return max(self.num_requests, 3 * concurrency)


async def measure_standalone(
    session: aiohttp.ClientSession, url: str, workload: Workload, plan: LoadPlan
) -> dict[str, float]:
    """Each class alone: one warm-up request, then the median of `standalone_repeats`."""
    latencies: dict[str, float] = {}
    progress = ProgressBar(len(workload.classes) * (plan.standalone_repeats + 1), "standalone")
    for spec in standalone_requests(workload, plan.seed):
        measured = []
        for attempt in range(plan.standalone_repeats + 1):
            record = await send(session, url, spec)
            progress.advance(record.ok)
            if not record.ok:
                progress.close()
                raise RuntimeError(f"standalone {spec.request_class.name} failed: {record.error}")
            if attempt:
                measured.append(record.latency_s)
        latencies[spec.request_class.name] = statistics.median(measured)
    progress.close()
    return latencies


async def run_level(
    session: aiohttp.ClientSession,
    url: str,
    workload: Workload,
    plan: LoadPlan,
    standalone_s: dict[str, float],
    mode: str,
    load: float,
) -> LevelResult:
    async def send_one(spec):
        return await send(session, url, spec)

    if mode == "concurrency" and plan.warmup_rounds:
        # The server's first batches of this size are not measured.
        warmup = sample_requests(workload, plan.warmup_rounds * int(load), plan.seed + 1)
        await closed_loop(send_one, warmup, int(load), plan.max_duration_s)
    before = await fetch_stats(session, url)
    if mode == "concurrency":
        specs = sample_requests(workload, plan.level_size(int(load)), plan.seed)
        progress = ProgressBar(len(specs), f"c={load:g}")
        records = await closed_loop(send_one, specs, int(load), plan.max_duration_s, progress)
    else:
        specs = sample_requests(workload, plan.level_size(), plan.seed)
        arrivals = poisson_arrivals(load, len(specs), plan.seed, plan.max_duration_s)
        progress = ProgressBar(len(arrivals), f"{load:g} req/s")
        records = await open_loop(send_one, specs, arrivals, progress)
    progress.close()
    level = summarize_level(mode, load, records, standalone_s, plan.slo_factors)
    level.batch_size_counts = batch_counts_between(before, await fetch_stats(session, url))
    return level


def batch_counts_between(before: dict | None, after: dict | None) -> dict[str, int]:
    """How often each batch size ran between two /v1/stats answers (empty if not reported)."""
    if not before or not after or "batch_size_counts" not in after:
        return {}
    earlier = before.get("batch_size_counts", {})
    counts = {k: n - earlier.get(k, 0) for k, n in after["batch_size_counts"].items()}
    return {k: counts[k] for k in sorted(counts, key=int) if counts[k] > 0}


async def fetch_stats(session: aiohttp.ClientSession, url: str) -> dict | None:
    try:
        async with session.get(url + STATS_PATH) as response:
            return await response.json() if response.status == 200 else None
    except (aiohttp.ClientError, ValueError):
        return None


async def benchmark(url: str, workload: Workload, plan: LoadPlan, label: str) -> RunResult:
    """Standalone latencies, then every load level in the plan, against the server at `url`."""
    url = check_local_url(url)
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        standalone = await measure_standalone(session, url, workload, plan)
        result = RunResult(
            label=label,
            url=url,
            workload=workload.name,
            classes=describe_classes(workload),
            standalone_s=standalone,
            meta=machine_meta(),
        )
        levels = [("concurrency", float(c)) for c in plan.concurrencies]
        levels += [("rate", float(r)) for r in plan.rates]
        for mode, load in levels:
            level = await run_level(session, url, workload, plan, standalone, mode, load)
            result.levels.append(level)
        result.server_stats = await fetch_stats(session, url)
    return result


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload and load flags that `benchmarks.serve` and `benchmarks.compare` share."""
    parser.add_argument("--workload", default="uniform-512", help="a shipped name or a JSON path")
    parser.add_argument("--size-scale", type=float, default=1.0, help="multiply sizes (tiny: 1/16)")
    parser.add_argument("--step-scale", type=float, default=1.0, help="multiply step counts")
    parser.add_argument("--size-multiple", type=int, default=16, help="round scaled sizes to this")
    parser.add_argument(
        "--unique-prompts",
        action="store_true",
        help="make every prompt distinct (by default prompts repeat from a list of 8)",
    )
    parser.add_argument("--concurrency", type=int, nargs="*", default=None)
    parser.add_argument("--rate", type=float, nargs="*", default=[], help="Poisson req/s")
    parser.add_argument("--num-requests", type=int, default=32, help="per load level")
    parser.add_argument("--max-duration", type=float, default=300.0, help="seconds per level")
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--standalone-repeats", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=1, help="per closed-loop client")
    parser.add_argument("--slo-factors", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    concurrencies = args.concurrency if args.concurrency is not None else []
    if not concurrencies and not args.rate:
        concurrencies = [1, 4]
    return LoadPlan(
        concurrencies=tuple(concurrencies),
        rates=tuple(args.rate),
        num_requests=args.num_requests,
        max_duration_s=args.max_duration,
        request_timeout_s=args.request_timeout,
        standalone_repeats=args.standalone_repeats,
        warmup_rounds=args.warmup_rounds,
        slo_factors=tuple(args.slo_factors),
        seed=args.seed,
    )


def workload_from_args(args: argparse.Namespace) -> Workload:
    workload = load_workload(args.workload).scaled(
        args.size_scale, args.step_scale, args.size_multiple
    )
    return replace(workload, unique_prompts=args.unique_prompts)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT")
    parser.add_argument("--label", default="server")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    workload = workload_from_args(args)
    result = asyncio.run(benchmark(args.url, workload, plan_from_args(args), args.label))
    print(table([result]))
    stem = args.output_dir / f"serve-{args.label}-{workload.name}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_name(stem.name + ".json").write_text(to_json(result) + "\n")
    plots = plot([result], stem, f"{args.label}: {workload.name}")
    print(f"wrote {stem}.json and {', '.join(map(str, plots))}", file=sys.stderr)


if __name__ == "__main__":
    main()
