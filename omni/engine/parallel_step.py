"""What every CFG-parallel rank runs: the plan rank 0 broadcasts, the row split, the
collectives and the step itself (prepare, then this rank's share of the forward).

Row policy: a request with real CFG puts its conditional row on rank 0 and its unconditional
row on rank 1; rows without a partner go to whichever rank has fewer rows so far, so the two
ranks differ by at most one row and rank 1 is never idle while rank 0 works.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from omni.config import CFG_PARALLEL_SIZES
from omni.engine.guard import is_out_of_memory
from omni.engine.partials import PreviewJob, due_previews
from omni.engine.runner import advance
from omni.engine.stages import InlineStages
from omni.models import FamilyAdapter
from omni.models.base import Row
from omni.request import GenerationParams, Request

logger = logging.getLogger(__name__)

WORLD_SIZE = max(CFG_PARALLEL_SIZES)
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
