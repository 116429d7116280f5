"""How much slower work runs inside a loaded omni.serve than timed alone: the profile's
`slowdown`, solved so that the simulator predicts what a real server did in a closed loop.

    python -m benchmarks.sim_calibrate benchmarks/profiles/cpu-omni-tiny.json   # solve again
"""

from __future__ import annotations

import asyncio
import statistics

import torch

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


if __name__ == "__main__":
    import sys

    recalibrate(sys.argv[1])
