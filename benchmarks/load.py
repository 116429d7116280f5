"""Load shapes: closed loop (a fixed number of clients) and open loop (Poisson arrivals).

Both are bounded twice: by the number of requests and by a duration after which no new request
is sent. Requests already sent are awaited (each has the session's own timeout).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from benchmarks.metrics import RequestRecord
from benchmarks.progress import ProgressBar
from benchmarks.workload import RequestSpec

Send = Callable[[RequestSpec], Awaitable[RequestRecord]]


def poisson_arrivals(rate: float, count: int, seed: int, max_duration_s: float) -> list[float]:
    """Seeded arrival offsets (seconds from the start) of a Poisson process at `rate` per second.

    At most `count` offsets, all below `max_duration_s`.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    offsets: list[float] = []
    now = 0.0
    while len(offsets) < count:
        now += rng.expovariate(rate)
        if now >= max_duration_s:
            break
        offsets.append(now)
    return offsets


async def closed_loop(
    send: Send,
    specs: Sequence[RequestSpec],
    concurrency: int,
    max_duration_s: float,
    progress: ProgressBar | None = None,
) -> list[RequestRecord]:
    """`concurrency` clients, each sending its next request as soon as its last one returns."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    pending = iter(specs)
    deadline = time.monotonic() + max_duration_s
    records: list[RequestRecord] = []

    async def client() -> None:
        for spec in pending:
            if time.monotonic() >= deadline:
                return
            record = await send(spec)
            records.append(record)
            if progress:
                progress.advance(record.ok)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return records


async def open_loop(
    send: Send,
    specs: Sequence[RequestSpec],
    arrivals: Sequence[float],
    progress: ProgressBar | None = None,
) -> list[RequestRecord]:
    """Send specs[i] at arrivals[i] seconds from now, whether or not earlier ones returned."""
    start = time.monotonic()
    records: list[RequestRecord] = []

    async def timed(spec: RequestSpec) -> None:
        record = await send(spec)
        records.append(record)
        if progress:
            progress.advance(record.ok)

    tasks = []
    for spec, offset in zip(specs, arrivals, strict=False):
        delay = start + offset - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(timed(spec)))
    await asyncio.gather(*tasks)
    return records
