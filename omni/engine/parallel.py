"""CFG-parallel: two ranks over torch.distributed, each running a share of every forward's rows.

Rank 0 owns the scheduler and the HTTP side. Every rank runs the same loop: receive
`(method, args)` by broadcast, run it, gather. Both ranks prepare every request themselves
(prompt encoding and seeded noise are deterministic), run their rows of the step's forward,
all-gather the predictions and apply the same sampler update (each replica keeps its own
sampler history, equal on both ranks), so the request replicas stay equal
without sending latents. Only rank 0 decodes. Encoding runs inside the step here (every rank
must encode in lockstep); decoding too.

The plan, the row split and the step both ranks run live in omni.engine.parallel_step; rank 1's
process in omni.engine.parallel_worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from omni.config import EngineConfig
from omni.engine.parallel_step import ParallelStep, RankGroup, RequestSpec, StepPlan
from omni.engine.parallel_worker import worker_main
from omni.engine.runner import Runner
from omni.engine.stages import InlineStages
from omni.models import FamilyAdapter
from omni.scheduler import RunnerOutput, SchedulerOutput

logger = logging.getLogger(__name__)


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
