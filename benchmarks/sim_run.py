"""Load levels on the simulated servers: the same requests, arrivals and metrics as
benchmarks.serve, measured on the simulated clock instead of a real one."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

from benchmarks.load import poisson_arrivals
from benchmarks.metrics import LevelResult, RequestRecord, summarize_level
from benchmarks.report import RunResult, describe_classes
from benchmarks.sim_baseline import BaselineServer
from benchmarks.sim_clock import Loop
from benchmarks.sim_engine import OmniServer, Server, SimRequest
from benchmarks.sim_profile import Profile
from benchmarks.workload import RequestSpec, Workload, sample_requests, standalone_requests
from omni.config import EngineConfig
from omni.scheduler import SchedulerConfig

BASELINES = {"baseline-batched": 8, "baseline-sequential": 1}
DEFAULTS = EngineConfig()


@dataclass(frozen=True, slots=True)
class SimOptions:
    """The servers' settings: omni's scheduler flags and the batched baseline's cap."""

    max_num_batched_tokens: int | None = None  # None: the knee, as omni finds it at start-up
    max_batch_size: int = DEFAULTS.max_batch_size
    max_num_running: int = DEFAULTS.max_num_running
    max_num_waiting: int = DEFAULTS.max_num_waiting
    max_starvation_steps: int = DEFAULTS.max_starvation_steps
    profile_seconds: float = DEFAULTS.profile_seconds
    baseline_max_batch: int = 8


@dataclass(slots=True)
class LevelPlan:
    mode: str  # "concurrency" | "rate"
    load: float
    specs: list[RequestSpec]
    warmup: list[RequestSpec] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)


def auto_budget(profile: Profile, max_batch_size: int, time_limit_s: float) -> int | None:
    """omni.engine.profile.profile_forward on the cost model: the same sizes, rounds, time limit
    and knee, with each forward's time read from the profile."""
    from omni.engine.profile import knee, measure_curve

    width, height = profile.default_size
    tokens = profile.tokens_per_row(width, height)
    points = measure_curve(
        lambda rows: profile.forward.ms(rows, tokens) / 1000, max_batch_size, time_limit_s
    )
    rows_at_knee = knee(points)
    return None if rows_at_knee is None else rows_at_knee * tokens


def scheduler_config(profile: Profile, policy: str, options: SimOptions) -> SchedulerConfig:
    budget = options.max_num_batched_tokens
    if budget is None and options.profile_seconds > 0:
        budget = auto_budget(profile, options.max_batch_size, options.profile_seconds)
    # Through EngineConfig's own mapping, so the simulated scheduler is configured as a served one.
    shared = {f.name for f in fields(SimOptions)} & {f.name for f in fields(EngineConfig)}
    shared.discard("max_num_batched_tokens")
    engine = replace(
        DEFAULTS,
        **{name: getattr(options, name) for name in shared},
        max_num_batched_tokens=budget,
        scheduling_policy=policy,
    )
    return engine.scheduler_config


ServerFactory = Callable[[Loop, Callable[[SimRequest], None]], Server]


def server_factory(label: str, profile: Profile, options: SimOptions) -> ServerFactory:
    """`omni-<policy>`, `baseline-batched` or `baseline-sequential`."""
    if label in BASELINES:
        cap = options.baseline_max_batch if label == "baseline-batched" else 1
        return lambda loop, done: BaselineServer(loop, profile, done, cap)
    policy = label.removeprefix("omni-") if label.startswith("omni-") else "fcfs"
    config = scheduler_config(profile, policy, options)
    return lambda loop, done: OmniServer(loop, profile, done, config)


class Driver:
    """One simulated server and its clients; phases run one after another on one clock."""

    def __init__(self, profile: Profile, workload: Workload, factory: ServerFactory) -> None:
        self.loop = Loop(profile.capacity, profile.slowdown)
        self.shapes = {c.name: profile.shape(c) for c in workload.classes}
        self.server = factory(self.loop, self._done)
        self._handler: Callable[[SimRequest], None] = lambda request: None

    def _done(self, request: SimRequest) -> None:
        self._handler(request)

    def _send(self, spec: RequestSpec) -> None:
        shape = self.shapes[spec.request_class.name]
        self.server.submit(SimRequest(spec, shape, self.loop.now))

    def closed(self, specs: Sequence[RequestSpec], concurrency: int) -> list[SimRequest]:
        pending = iter(specs)
        finished: list[SimRequest] = []

        def send_next() -> None:
            spec = next(pending, None)
            if spec is not None:
                self._send(spec)

        def done(request: SimRequest) -> None:
            finished.append(request)
            self.loop.at(self.loop.now, send_next)

        self._handler = done
        for _ in range(concurrency):
            self.loop.at(self.loop.now, send_next)
        self.loop.run()
        return finished

    def open(self, specs: Sequence[RequestSpec], arrivals: Sequence[float]) -> list[SimRequest]:
        finished: list[SimRequest] = []
        self._handler = finished.append
        start = self.loop.now
        for spec, offset in zip(specs, arrivals, strict=False):
            self.loop.at(start + offset, lambda spec=spec: self._send(spec))
        self.loop.run()
        return finished


def record(request: SimRequest) -> RequestRecord:
    ok = request.status == 200
    first = request.first_step
    return RequestRecord(
        class_name=request.spec.request_class.name,
        num_images=request.spec.request_class.n,
        start=request.send,
        end=request.end,
        ok=ok,
        status=request.status,
        error=request.error,
        queue_time_s=first - request.send if ok and first is not None else None,
        inference_time_s=request.server_done - request.send if ok else None,
    )


def simulate_level(
    profile: Profile, workload: Workload, factory: ServerFactory, plan: LevelPlan
) -> tuple[list[RequestRecord], dict[int, int]]:
    driver = Driver(profile, workload, factory)
    if plan.mode == "concurrency":
        if plan.warmup:
            driver.closed(plan.warmup, int(plan.load))
        driver.server.batch_counts.clear()
        finished = driver.closed(plan.specs, int(plan.load))
    else:
        finished = driver.open(plan.specs, plan.arrivals)
    return [record(r) for r in finished], dict(driver.server.batch_counts)


def simulate_standalone(
    profile: Profile, workload: Workload, factory: ServerFactory, repeats: int, seed: int
) -> dict[str, float]:
    """Each class alone, one at a time: a warm-up, then the median of `repeats` latencies."""
    latencies = {}
    for spec in standalone_requests(workload, seed):
        driver = Driver(profile, workload, factory)
        finished = driver.closed([spec] * (repeats + 1), 1)
        latencies[spec.request_class.name] = statistics.median(r.end - r.send for r in finished[1:])
    return latencies


def level_plans(
    workload: Workload,
    concurrencies: Sequence[int],
    rates: Sequence[float],
    num_requests: int,
    seed: int,
    warmup_rounds: int = 1,
    max_duration_s: float = float("inf"),
) -> list[LevelPlan]:
    """The levels benchmarks.serve would run: same specs, warm-ups and Poisson arrivals."""
    plans = []
    for concurrency in concurrencies:
        specs = sample_requests(workload, max(num_requests, 3 * concurrency), seed)
        warmup = sample_requests(workload, warmup_rounds * concurrency, seed + 1)
        plans.append(LevelPlan("concurrency", float(concurrency), specs, warmup))
    for rate in rates:
        specs = sample_requests(workload, num_requests, seed)
        arrivals = poisson_arrivals(rate, len(specs), seed, max_duration_s)
        plans.append(LevelPlan("rate", float(rate), specs[: len(arrivals)], arrivals=arrivals))
    return plans


def simulate_run(
    label: str,
    profile: Profile,
    workload: Workload,
    options: SimOptions,
    plans: Sequence[LevelPlan],
    standalone_repeats: int = 3,
    seed: int = 0,
    slo_factors: Sequence[float] = (2.0, 5.0, 10.0),
) -> RunResult:
    factory = server_factory(label, profile, options)
    standalone = simulate_standalone(profile, workload, factory, standalone_repeats, seed)
    result = RunResult(
        label=label,
        url="simulated",
        workload=workload.name,
        classes=describe_classes(workload),
        standalone_s=standalone,
        meta={"simulated": True, "profile": profile.name, "options": repr(options)},
    )
    for plan in plans:
        records, counts = simulate_level(profile, workload, factory, plan)
        level: LevelResult = summarize_level(plan.mode, plan.load, records, standalone, slo_factors)
        level.batch_size_counts = {str(k): counts[k] for k in sorted(counts)}
        result.levels.append(level)
    return result
