"""A load run's results: the typed record, its JSON form, a text table and the PNG plots."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.metrics import LevelResult, RequestRecord, Summary
from benchmarks.workload import Workload


@dataclass(slots=True)
class RunResult:
    """One server under one workload, at every load level asked for."""

    label: str
    url: str
    workload: str
    classes: dict[str, str]  # class name -> what it asks for, e.g. "512x512, 20 steps"
    standalone_s: dict[str, float]  # class name -> median latency with nothing else running
    levels: list[LevelResult] = field(default_factory=list)
    server_stats: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def describe_classes(workload: Workload) -> dict[str, str]:
    return {c.name: c.label for c in workload.classes}


def machine_meta() -> dict[str, Any]:
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }


def to_json(results: Sequence[RunResult] | RunResult) -> str:
    if isinstance(results, RunResult):
        return json.dumps(dataclasses.asdict(results), indent=2)
    return json.dumps([dataclasses.asdict(r) for r in results], indent=2)


def level_from_dict(data: dict[str, Any]) -> LevelResult:
    def summary(value: dict[str, Any] | None) -> Summary | None:
        return Summary(**value) if value else None

    return LevelResult(
        **{
            **data,
            "latency": summary(data["latency"]),
            "queue_time": summary(data["queue_time"]),
            "inference_time": summary(data["inference_time"]),
            "per_class_latency": {k: summary(v) for k, v in data["per_class_latency"].items()},
            "records": [RequestRecord(**r) for r in data.get("records", [])],
        }
    )


def run_from_dict(data: dict[str, Any]) -> RunResult:
    return RunResult(**{**data, "levels": [level_from_dict(d) for d in data["levels"]]})


def load_label(level: LevelResult) -> str:
    return f"c={level.load:g}" if level.mode == "concurrency" else f"{level.load:g} req/s"


def format_seconds(summary: Summary | None, attribute: str) -> str:
    return f"{getattr(summary, attribute):.3f}" if summary else "-"


def table(results: Sequence[RunResult]) -> str:
    """One row per server and load level: throughput, latency, first-step time, SLO, errors."""
    factors = sorted(
        {k for r in results for level in r.levels for k in level.slo_attainment},
        key=lambda k: float(k.removeprefix("k=")),
    )
    header = (
        f"{'server':<20} {'load':>11} {'ok/sent':>8} {'img/s':>8} {'req/s':>7} "
        f"{'mean s':>7} {'p50 s':>7} {'p90 s':>7} {'p99 s':>7} {'1st-step p50':>12} {'batch':>5}"
        + "".join(f" {'SLO ' + k:>9}" for k in factors)
    )
    lines = [header, "-" * len(header)]
    for result in results:
        for level in result.levels:
            slo = "".join(f" {level.slo_attainment.get(k, 0.0):>9.0%}" for k in factors)
            lines.append(
                f"{result.label:<20} {load_label(level):>11} "
                f"{f'{level.num_ok}/{level.num_requests}':>8} "
                f"{level.images_per_s:>8.2f} {level.requests_per_s:>7.2f} "
                f"{format_seconds(level.latency, 'mean'):>7} "
                f"{format_seconds(level.latency, 'p50'):>7} "
                f"{format_seconds(level.latency, 'p90'):>7} "
                f"{format_seconds(level.latency, 'p99'):>7} "
                f"{format_seconds(level.queue_time, 'p50'):>12} "
                f"{f'{level.mean_batch:.1f}' if level.mean_batch else '-':>5}" + slo
            )
    return "\n".join(lines)


def plot(results: Sequence[RunResult], path: Path, title: str) -> list[Path]:
    """Latency (p50 solid, p99 dashed) and throughput against load; one PNG per load mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    modes = sorted({level.mode for r in results for level in r.levels})
    for mode in modes:
        figure, (latency_axes, throughput_axes) = plt.subplots(1, 2, figsize=(10, 4))
        for result in results:
            levels = [lv for lv in result.levels if lv.mode == mode and lv.latency]
            if not levels:
                continue
            loads = [lv.load for lv in levels]
            (line,) = latency_axes.plot(
                loads, [lv.latency.p50 for lv in levels], "o-", label=f"{result.label} p50"
            )
            latency_axes.plot(
                loads,
                [lv.latency.p99 for lv in levels],
                "s--",
                color=line.get_color(),
                label=f"{result.label} p99",
            )
            throughput_axes.plot(
                loads, [lv.images_per_s for lv in levels], "o-", label=result.label
            )
        x_label = "concurrent requests" if mode == "concurrency" else "offered load (req/s)"
        latency_axes.set(xlabel=x_label, ylabel="latency (s)", title="latency")
        throughput_axes.set(xlabel=x_label, ylabel="images/s", title="throughput")
        loads = sorted({lv.load for r in results for lv in r.levels if lv.mode == mode})
        for axes in (latency_axes, throughput_axes):
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
            axes.set_ylim(bottom=0)
            if mode == "concurrency":
                axes.set_xscale("log", base=2)
            axes.set_xticks(loads, [f"{load:g}" for load in loads])
            axes.minorticks_off()
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        target = path.with_name(f"{path.name}-{mode}.png")
        target.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(target, dpi=90)
        plt.close(figure)
        written.append(target)
    return written
