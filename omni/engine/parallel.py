"""CFG-parallel: two ranks over torch.distributed, each running a share of every forward's rows.

Rank 0 owns the scheduler and the HTTP side. Every rank runs the same loop: receive
`(method, args)` by broadcast, run it, gather. Both ranks prepare every request themselves
(prompt encoding and seeded noise are deterministic), run their rows of the step's forward,
all-gather the predictions and apply the same Euler update, so the request replicas stay equal
without sending latents. Only rank 0 decodes.

Row policy: a request with real CFG puts its conditional row on rank 0 and its unconditional
row on rank 1; rows without a partner go to whichever rank has fewer rows so far, so the two
ranks differ by at most one row and rank 1 is never idle while rank 0 works.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from omni.config import EngineConfig
from omni.engine.runner import Runner, group_by_shape, is_out_of_memory
from omni.flow import euler_step
from omni.models import FamilyAdapter, load_model
from omni.models.base import Row
from omni.request import GenerationParams, Request
from omni.scheduler import RunnerOutput, SchedulerOutput

logger = logging.getLogger(__name__)

WORLD_SIZE = 2
COLLECTIVE_TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """A new request, sent in full once; later steps send only its step index."""

    request_id: str
    params: GenerationParams
    step_keys: tuple[Any, ...]
    num_rows: int

    def build(self) -> Request:
        return Request(self.request_id, self.params, self.step_keys, self.num_rows)


@dataclass(frozen=True, slots=True)
class StepPlan:
    prepare: list[RequestSpec] = field(default_factory=list)
    denoise: list[tuple[str, int]] = field(default_factory=list)  # (request_id, step_index)
    release: list[str] = field(default_factory=list)  # requests the workers may forget


def split_rows(rows: list[Row]) -> list[list[int]]:
    """Row indices per rank (see the module docstring for the policy)."""
    guided = {id(row.request) for row in rows if row.uncond}
    shares: list[list[int]] = [[], []]
    unpaired = []
    for index, row in enumerate(rows):
        if row.uncond:
            shares[1].append(index)
        elif id(row.request) in guided:
            shares[0].append(index)
        else:
            unpaired.append(index)
    for index in unpaired:
        shares[0 if len(shares[0]) <= len(shares[1]) else 1].append(index)
    return shares


class RankGroup:
    """The process group and the three collectives the step needs."""

    def __init__(self, rank: int, init_file: Path, device: torch.device) -> None:
        self.rank = rank
        # NCCL cannot put two ranks on one GPU; with fewer GPUs than ranks, gloo carries tensors.
        use_nccl = device.type == "cuda" and torch.cuda.device_count() >= WORLD_SIZE
        dist.init_process_group(
            "nccl" if use_nccl else "gloo",
            init_method=f"file://{init_file}",
            rank=rank,
            world_size=WORLD_SIZE,
            timeout=COLLECTIVE_TIMEOUT,
        )
        self.objects = dist.new_group(backend="gloo") if use_nccl else None
        self.tensor_device = device if use_nccl else torch.device("cpu")

    def broadcast(self, message: Any = None) -> Any:
        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * WORLD_SIZE
        dist.all_gather_object(values, value, group=self.objects)
        return values

    def gather_rows(self, local: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
        """Every rank's rows; ranks with fewer rows pad, and padding is dropped again."""
        padded = local.new_zeros((max(counts), *local.shape[1:]))
        padded[: local.shape[0]] = local
        padded = padded.to(self.tensor_device)
        pieces = [torch.empty_like(padded) for _ in range(WORLD_SIZE)]
        dist.all_gather(pieces, padded)
        return [piece[:count].to(local.device) for piece, count in zip(pieces, counts, strict=True)]

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class ParallelStep:
    """What every rank runs for one step: prepare, then its share of the forward."""

    def __init__(self, adapter: FamilyAdapter, group: RankGroup) -> None:
        self.adapter = adapter
        self.group = group

    def prepare(self, requests: list[Request], failed: dict[str, str]) -> None:
        local: dict[str, str] = {}
        if requests:
            try:
                self.adapter.prepare(requests)
            except Exception as exc:
                logger.exception("prepare failed on rank %d", self.group.rank)
                local = {r.request_id: f"{type(exc).__name__}: {exc}" for r in requests}
        for rank_failed in self.group.gather_objects(local):  # all ranks drop the same requests
            failed.update(rank_failed)

    def denoise(self, requests: list[Request], failed: dict[str, str]) -> None:
        if not requests:
            return
        rows = self.adapter.rows(requests)
        shares = split_rows(rows)
        mine = [rows[i] for i in shares[self.group.rank]]
        local, status = self._forward(mine)
        statuses = self.group.gather_objects(status)
        errors = [(rank, s) for rank, s in enumerate(statuses) if s["error"]]
        if errors:
            if all(s["oom"] for _, s in errors) and len(requests) > 1:
                half = len(requests) // 2
                self.denoise(requests[:half], failed)
                self.denoise(requests[half:], failed)
                return
            rank, status = errors[0]
            for request in requests:
                failed[request.request_id] = f"rank {rank}: {status['error']}"
            return
        shape = next(s["shape"] for s in statuses if s["shape"] is not None)
        if local is None:
            dtype = getattr(torch, next(s["dtype"] for s in statuses if s["dtype"]))
            local = torch.empty((0, *shape[1:]), dtype=dtype, device=self.adapter.device)
        pieces = self.group.gather_rows(local, [len(share) for share in shares])
        prediction = torch.empty((len(rows), *shape[1:]), dtype=local.dtype, device=local.device)
        for share, piece in zip(shares, pieces, strict=True):
            if share:
                prediction[share] = piece
        velocities = self.adapter.combine(requests, rows, prediction)
        for request, velocity in zip(requests, velocities, strict=True):
            index = request.step_index
            request.latents = euler_step(
                request.latents, velocity, request.sigmas[index], request.sigmas[index + 1]
            )

    def _forward(self, rows: list[Row]) -> tuple[torch.Tensor | None, dict[str, Any]]:
        status: dict[str, Any] = {"error": None, "oom": False, "shape": None, "dtype": None}
        if not rows:
            return None, status
        try:
            local = self.adapter.forward(rows)
        except Exception as exc:
            logger.exception("forward failed on rank %d", self.group.rank)
            status.update(error=f"{type(exc).__name__}: {exc}", oom=is_out_of_memory(exc))
            return None, status
        status.update(shape=tuple(local.shape), dtype=str(local.dtype).removeprefix("torch."))
        return local, status


class CfgParallelRunner(Runner):
    """Rank 0's runner: starts rank 1, sends it each step's plan, runs its own share."""

    def __init__(
        self,
        adapter: FamilyAdapter,
        config: EngineConfig,
        on_worker_death: Callable[[str], None],
    ) -> None:
        super().__init__(adapter)
        self._workdir = tempfile.TemporaryDirectory(prefix="omni-cfg-")
        init_file = Path(self._workdir.name) / "rendezvous"
        context = multiprocessing.get_context("spawn")
        self.worker = context.Process(
            target=worker_main, args=(config, init_file), name="omni-cfg-rank1", daemon=True
        )
        self.worker.start()
        self._closing = False
        self._on_worker_death = on_worker_death
        threading.Thread(target=self._watch_worker, name="omni-cfg-watch", daemon=True).start()
        self.group = RankGroup(0, init_file, adapter.device)
        self.step = ParallelStep(adapter, self.group)
        self._released: list[str] = []

    def execute(self, output: SchedulerOutput) -> RunnerOutput:
        plan = StepPlan(
            prepare=[
                RequestSpec(r.request_id, r.params, r.step_keys, r.num_rows) for r in output.prepare
            ],
            denoise=[(r.request_id, r.step_index) for r in output.denoise],
            release=self._released,
        )
        self._released = []
        failed: dict[str, str] = {}
        try:
            self.group.broadcast(("execute", plan))
            with torch.inference_mode():
                self.step.prepare(output.prepare, failed)
                self.step.denoise([r for r in output.denoise if r.request_id not in failed], failed)
        except Exception as exc:
            self.worker.join(timeout=2)
            if not self.worker.is_alive():
                raise RuntimeError(self._death_message()) from exc
            raise
        with torch.inference_mode():
            for group in group_by_shape(output.decode):
                self._guarded(self._decode, group, failed)
        self.release([r.request_id for r in output.decode] + list(failed))
        return RunnerOutput(failed=failed)

    def release(self, request_ids: list[str]) -> None:
        self._released.extend(request_ids)

    def close(self) -> None:
        self._closing = True
        if self.worker.is_alive():
            try:
                self.group.broadcast(("shutdown", None))
            except Exception:
                logger.warning("rank 1 did not take the shutdown message")
            self.worker.join(timeout=30)
        if self.worker.is_alive():
            self.worker.kill()
        self.group.close()
        self._workdir.cleanup()

    def _watch_worker(self) -> None:
        while self.worker.is_alive():
            time.sleep(0.2)
        if not self._closing:
            self._on_worker_death(self._death_message())

    def _death_message(self) -> str:
        return f"the CFG-parallel worker (rank 1) exited with code {self.worker.exitcode}"


def worker_main(config: EngineConfig, init_file: Path) -> None:
    """Rank 1: load the same model, then run whatever rank 0 broadcasts until told to stop."""
    from omni.serve import quiet_libraries

    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank1 %(levelname)s %(message)s")
    quiet_libraries()
    adapter = load_model(config)
    group = RankGroup(1, init_file, adapter.device)
    step = ParallelStep(adapter, group)
    replicas: dict[str, Request] = {}
    try:
        while True:
            method, plan = group.broadcast()
            if method == "shutdown":
                return
            for request_id in plan.release:
                replicas.pop(request_id, None)
            new = [spec.build() for spec in plan.prepare]
            replicas.update((r.request_id, r) for r in new)
            failed: dict[str, str] = {}
            with torch.inference_mode():
                step.prepare(new, failed)
                batch = []
                for request_id, step_index in plan.denoise:
                    if request_id not in failed:
                        replicas[request_id].step_index = step_index
                        batch.append(replicas[request_id])
                step.denoise(batch, failed)
            for request_id in failed:
                replicas.pop(request_id, None)
    finally:
        group.close()
