"""The engine benchmark's results (benchmarks.engine): the typed record, a text table, a plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.archs import get_arch
from benchmarks.engine_path import EngineRun


@dataclass(slots=True)
class StepResult:
    width: int
    height: int
    batch: int
    ms_per_step: float | None  # None: out of memory
    images_per_s: float | None = None
    tflops: float | None = None
    mfu: float | None = None
    scheduler_us: float | None = None
    scheduler_share: float | None = None  # scheduler / (scheduler + forward)


@dataclass(slots=True)
class EngineReport:
    arch: str
    device: str
    dtype: str
    num_params: int
    steps: int
    num_frames: int
    peak_tflops: float | None
    transformer: list[StepResult] = field(default_factory=list)
    engine: list[EngineRun] = field(default_factory=list)


def step_result(
    width: int, height: int, batch: int, ms: float, flops: float, report: EngineReport, steps: int
) -> StepResult:
    tflops = batch * flops / (ms / 1000) / 1e12
    return StepResult(
        width=width,
        height=height,
        batch=batch,
        ms_per_step=ms,
        images_per_s=batch / (ms / 1000 * steps),
        tflops=tflops,
        mfu=tflops / report.peak_tflops if report.peak_tflops else None,
    )


def format_step(r: StepResult) -> str:
    if r.ms_per_step is None:
        return f"{r.width}x{r.height} batch {r.batch:>3}: out of memory"
    mfu = f"{r.mfu:6.1%}" if r.mfu is not None else "   n/a"
    return (
        f"{r.width}x{r.height} batch {r.batch:>3}: {r.ms_per_step:10.2f} ms/step "
        f"{r.images_per_s:9.3f} img/s {r.tflops:9.3f} TFLOP/s MFU {mfu} "
        f"scheduler {r.scheduler_us:7.1f} us ({r.scheduler_share:.2%})"
    )


def table(report: EngineReport) -> str:
    lines = [
        f"arch {report.arch}: {report.num_params:,} params, {report.dtype} on "
        f"{report.device}; {report.steps} steps per image"
        + (f"; {report.num_frames} frames" if get_arch(report.arch).family == "wan" else "")
        + (f"; peak {report.peak_tflops:g} TFLOP/s" if report.peak_tflops else "; MFU n/a"),
        "",
        "transformer forward (random weights), one timestep per sample:",
    ]
    lines += [format_step(r) for r in report.transformer]
    if report.engine:
        lines += ["", "full engine path (omni.engine, all requests submitted at once):"]
        lines += [run.line() for run in report.engine]
    return "\n".join(lines)


def plot(report: EngineReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ms_axes, rate_axes) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = sorted({(r.width, r.height) for r in report.transformer})
    for width, height in sizes:
        rows = [
            r
            for r in report.transformer
            if (r.width, r.height) == (width, height) and r.ms_per_step is not None
        ]
        batches = [r.batch for r in rows]
        ms_axes.plot(batches, [r.ms_per_step for r in rows], "o-", label=f"{width}x{height}")
        rate_axes.plot(batches, [r.images_per_s for r in rows], "o-", label=f"{width}x{height}")
    ms_axes.set(xlabel="batch size", ylabel="ms per denoising step", title="step time")
    rate_axes.set(
        xlabel="batch size", ylabel=f"images/s ({report.steps} steps)", title="throughput"
    )
    batches = sorted({r.batch for r in report.transformer})
    for axes in (ms_axes, rate_axes):
        axes.set_xscale("log", base=2)
        axes.set_xticks(batches, [str(b) for b in batches])
        axes.minorticks_off()
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(f"{report.arch} transformer, {report.dtype} on {report.device}", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
