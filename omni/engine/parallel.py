"""CFG-parallel: two ranks over torch.distributed, each running a share of every forward's rows.

Rank 0 owns the scheduler and the HTTP side. Every rank runs the same loop: receive
`(method, args)` by broadcast, run it, gather. Both ranks prepare every request themselves
(prompt encoding and seeded noise are deterministic), run their rows of the step's forward,
all-gather the predictions and apply the same sampler update (each replica keeps its own
sampler history, equal on both ranks), so the request replicas stay equal
without sending latents. Only rank 0 decodes. Encoding runs inside the step here (every rank
must encode in lockstep); decoding too.

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
from omni.engine.guard import is_out_of_memory
from omni.engine.partials import PreviewJob, due_previews
from omni.engine.runner import Runner, advance
from omni.engine.stages import InlineStages
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
    tokens_per_row: int

    @classmethod
    def of(cls, request: Request) -> RequestSpec:
        r = request
        return cls(r.request_id, r.params, r.step_keys, r.num_rows, r.tokens_per_row)

    def build(self) -> Request:
        return Request(
            self.request_id, self.params, self.step_keys, self.num_rows, self.tokens_per_row
        )


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
        self.device = device
        self.dtype = torch.float32  # set from the model's predictions on the first step

    def broadcast(self, message: Any = None) -> Any:
        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.objects)
        return box[0]

    def gather_objects(self, value: Any) -> list[Any]:
        values: list[Any] = [None] * WORLD_SIZE
        dist.all_gather_object(values, value, group=self.objects)
        return values

    def gather_rows(
        self, local: list[torch.Tensor], shapes: list[list[torch.Size]]
    ) -> list[list[torch.Tensor]]:
        """Every rank's row predictions; rows of any shapes travel flattened in one tensor."""
        sizes = [sum(shape.numel() for shape in rank_shapes) for rank_shapes in shapes]
        flat = torch.cat([t.reshape(-1) for t in local]) if local else None
        padded = self._padded(flat, max(sizes)).to(self.tensor_device)
        pieces = [torch.empty_like(padded) for _ in range(WORLD_SIZE)]
        dist.all_gather(pieces, padded)
        rows = []
        for piece, rank_shapes in zip(pieces, shapes, strict=True):
            piece = piece.to(self.device)
            numels = [shape.numel() for shape in rank_shapes]
            chunks = piece[: sum(numels)].split(numels)
            rows.append([c.view(shape) for c, shape in zip(chunks, rank_shapes, strict=True)])
        return rows

    def _padded(self, flat: torch.Tensor | None, size: int) -> torch.Tensor:
        padded = torch.zeros(size, dtype=self.dtype, device=self.device)
        if flat is not None:
            padded[: flat.numel()] = flat
        return padded

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class ParallelStep:
    """What every rank runs for one step: prepare, then its share of the forward."""

    def __init__(self, adapter: FamilyAdapter, group: RankGroup) -> None:
        self.adapter = adapter
        self.group = group
        self.stages = InlineStages(adapter)
        self.previews: list[PreviewJob] = []  # rank 0's to decode: the partial images due

    def prepare(self, requests: list[Request], failed: dict[str, str]) -> None:
        local: dict[str, str] = {}
        if requests:
            try:
                self.stages.encode(requests)
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
        self.group.dtype = getattr(torch, next(s["dtype"] for s in statuses if s["dtype"]))
        row_shapes = [[rows[i].request.latents.shape for i in share] for share in shares]
        pieces = self.group.gather_rows(local or [], row_shapes)
        prediction: list[torch.Tensor | None] = [None] * len(rows)
        for share, piece in zip(shares, pieces, strict=True):
            for index, row in zip(share, piece, strict=True):
                prediction[index] = row
        outputs = self.adapter.combine(requests, rows, prediction)
        if self.group.rank == 0:
            self.previews += due_previews(requests, outputs)
        advance(requests, outputs)

    def _forward(self, rows: list[Row]) -> tuple[list[torch.Tensor] | None, dict[str, Any]]:
        status: dict[str, Any] = {"error": None, "oom": False, "dtype": None}
        if not rows:
            return None, status
        try:
            local = self.adapter.forward_rows(rows)
        except Exception as exc:
            logger.exception("forward failed on rank %d", self.group.rank)
            status.update(error=f"{type(exc).__name__}: {exc}", oom=is_out_of_memory(exc))
            return None, status
        status.update(dtype=str(local[0].dtype).removeprefix("torch."))
        return local, status


class CfgParallelRunner(Runner):
    """Rank 0's runner: starts rank 1, sends it each step's plan, runs its own share."""

    def __init__(
        self,
        adapter: FamilyAdapter,
        config: EngineConfig,
        on_worker_death: Callable[[str], None],
    ) -> None:
        super().__init__(adapter, InlineStages(adapter))
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
            prepare=[RequestSpec.of(r) for r in output.prepare],
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
        self.stages.submit_previews(self.step.previews)
        self.step.previews = []
        self.stages.submit_decode(output.decode)
        results = self.stages.collect()
        results.failed.update(failed)
        self.release([r.request_id for r in output.decode] + list(results.failed))
        encoded = [r.request_id for r in output.prepare if r.request_id not in failed]
        return RunnerOutput(encoded, results.decoded, results.failed, results.previews)

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
        super().close()

    def _watch_worker(self) -> None:
        while self.worker.is_alive():
            time.sleep(0.2)
        if not self._closing:
            self._on_worker_death(self._death_message())

    def _death_message(self) -> str:
        return f"the CFG-parallel worker (rank 1) exited with code {self.worker.exitcode}"


def worker_main(config: EngineConfig, init_file: Path) -> None:
    """Rank 1: load the same model, then run whatever rank 0 broadcasts until told to stop."""
    from omni.logs import quiet_libraries

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
