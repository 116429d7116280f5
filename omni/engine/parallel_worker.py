"""Rank 1 of CFG-parallel: the process rank 0's runner spawns (see omni.engine.parallel)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from omni.config import EngineConfig
from omni.engine.parallel_step import ParallelStep, RankGroup
from omni.models import load_model
from omni.request import Request


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
