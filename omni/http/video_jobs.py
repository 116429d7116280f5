"""Video jobs as a durable queue: accepted jobs wait in the store until the engine has room.

`submit` only writes a queued record, with the job's input, to the store. One dispatcher task
claims queued jobs from the store, oldest first, while the engine has free slots; a job the
engine refuses anyway (a sync or image request took the slot first) goes back to the queue. So a
job the API accepted is never failed for overload, and one that was queued when the server
stopped is in the store, with its input, for the next server to run (or, on a shared store, for
another server). A lease keeper renews the leases of the jobs this server runs, stops any whose
lease another server took over, and reaps the jobs whose lease ran out. Of a server's front ends
(--api-server-count), only the first runs jobs: the others queue, list and delete them, and one
dispatcher sees the free slots of all replicas, where several would race for the same slots.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing, suppress

from omni.aio import wait_at_most
from omni.engine import EngineService, Progress
from omni.errors import EngineOverloadedError, OmniError, ReplicaLostError
from omni.http.errors import ApiError
from omni.http.video_job_input import decode_input, encode_input, same_request
from omni.interpolation.worker import Interpolator
from omni.jobs import Claim, JobStore
from omni.media import encode_mp4
from omni.previews import encode_previews
from omni.request import GenerationParams
from omni.video_job import JobStatus, KeyedJob, VideoJob, new_job_id

logger = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 10.0
DISPATCH_POLL_S = 0.1  # how soon a job sees room that a sync or image request freed
QUEUE_FULL_RETRY_AFTER_S = 5
# A job whose replica died runs once more (as an image request does): one that kills its replica
# again fails, so a job that crashes replicas cannot take them down one after another.
RERUNS_AFTER_REPLICA_LOSS = 1
LEASE_RENEWALS = 3  # renewals per lease: a job survives two missed ones


class LeaseLostError(Exception):
    """The job was deleted, or its lease ran out and another server claimed it."""


class VideoJobs:
    """The queue of accepted jobs (in the store) and the ones this server runs."""

    def __init__(
        self,
        engine: EngineService,
        store: JobStore,
        max_queued: int,
        interpolator: Interpolator,
        runs_jobs: bool = True,
    ) -> None:
        self.engine = engine
        self.interpolator = interpolator
        self.store = store
        self.max_queued = max_queued
        self.running: dict[str, asyncio.Task[None]] = {}
        self.claims: dict[str, Claim] = {}
        self.starting: set[asyncio.Task[KeyedJob]] = set()
        self.replica_losses: dict[str, int] = {}  # job id -> its replicas that died under it
        self.is_dispatching = runs_jobs
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start claiming queued jobs (a restart's first), and keeping leases."""
        if not self.is_dispatching:
            return
        queued = await asyncio.to_thread(self.store.count_queued)
        if queued:
            logger.info("%d video job(s) are queued in the store", queued)
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="video-dispatcher"),
            asyncio.create_task(self._keep_leases(), name="video-leases"),
        ]

    async def submit(
        self,
        params: GenerationParams,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> VideoJob:
        """Queue a job, or return the one made with this idempotency key; 503 when full.

        `request_digest` tells a retry (the same digest) from another request with the key.
        """
        if idempotency_key is not None:
            held = await asyncio.to_thread(self.store.find_key, idempotency_key)
            if held is not None:
                return same_request(held, request_digest, idempotency_key)
        queued = await asyncio.to_thread(self.store.count_queued)
        if queued + len(self.starting) >= self.max_queued:
            raise ApiError(
                503,
                f"the server is busy: {self.max_queued} video jobs are already queued "
                "(--max-queued-video-jobs)",
                code="video_queue_full",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )
        job = VideoJob(
            id=new_job_id(),
            created_at=int(time.time()),
            status=JobStatus.QUEUED,
            progress=0,
            model=self.engine.config.name,
            prompt=params.prompt,
            seconds=f"{params.output_num_frames / params.output_fps:g}",
            size=f"{params.width}x{params.height}",
        )
        # Shielded: a client that disconnects mid-insert must not leave a record that is in the
        # store but not in the queue (queued until a restart). Both happen or neither.
        start = asyncio.create_task(self._insert(job, params, idempotency_key, request_digest))
        self.starting.add(start)
        start.add_done_callback(self.starting.discard)
        held = await asyncio.shield(start)
        return same_request(held, request_digest, idempotency_key)

    async def _insert(
        self, job: VideoJob, params: GenerationParams, key: str | None, digest: str | None
    ) -> KeyedJob:
        job_input = await asyncio.to_thread(encode_input, params)
        held = await asyncio.to_thread(self.store.create, job, job_input, key, digest)
        if held.job.id == job.id:
            self._wake.set()
        return held

    async def _dispatch(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._dispatch_queued()
            except Exception:  # a failing disk must not end dispatching for good
                logger.exception("handing video jobs to the engine failed; retrying")
            with suppress(TimeoutError):
                await wait_at_most(self._wake.wait(), DISPATCH_POLL_S)

    async def _dispatch_queued(self) -> None:
        while self.is_dispatching and self.engine.num_free_slots > 0:
            claim = await asyncio.to_thread(self.store.claim)
            if claim is None:
                return
            job_id = claim.job_id
            try:
                params = await self._load(job_id)
            except Exception as exc:
                logger.exception("video job %s has an input that cannot be read", job_id)
                await asyncio.to_thread(
                    self.store.fail, job_id, "internal_error", str(exc), claim.fence
                )
                continue
            if params is None:  # deleted since the claim
                continue
            task = asyncio.create_task(self._run(claim, params), name=job_id)
            self.running[job_id] = task
            self.claims[job_id] = claim
            await asyncio.sleep(0)  # it submits its request before free slots are counted

    async def _keep_leases(self) -> None:
        """Renew the running jobs' leases, stop those lost, and reap expired ones."""
        while True:
            await asyncio.sleep(self.store.lease_s / LEASE_RENEWALS)
            try:
                for job_id, claim in list(self.claims.items()):
                    if not await asyncio.to_thread(self.store.renew, claim):
                        logger.warning("video job %s: lease lost; stopping it here", job_id)
                        self._stop(job_id)
                if await asyncio.to_thread(self.store.reap):
                    self._wake.set()
            except Exception:  # a store that is down for a while must not end the renewals
                logger.exception("renewing video job leases failed; retrying")

    def _stop(self, job_id: str) -> asyncio.Task[None] | None:
        self.claims.pop(job_id, None)
        task = self.running.pop(job_id, None)
        if task is not None:
            task.cancel()  # closing the engine stream aborts the request
        return task

    async def _load(self, job_id: str) -> GenerationParams | None:
        job_input = await asyncio.to_thread(self.store.job_input, job_id)
        if job_input is None:
            return None
        return await asyncio.to_thread(decode_input, job_input)

    async def _run(self, claim: Claim, params: GenerationParams) -> None:
        job_id, fence = claim.job_id, claim.fence
        refused = rerun = False
        try:
            finished = None
            progress = -1
            # One engine request id per claim: a run given up on (replica lost, lease lost) may
            # still have an encode or decode in flight in the engine under its own id.
            run_id = f"{job_id}-{fence}"
            async with aclosing(self.engine.stream(params, request_id=run_id)) as events:
                async for event in events:
                    if isinstance(event, Progress):
                        done = event.step_index * 100 // event.num_steps
                        if done != progress:
                            progress = done
                            held = await asyncio.to_thread(
                                self.store.mark_progress, job_id, done, fence
                            )
                            if not held:
                                raise LeaseLostError(job_id)
                    else:
                        finished = event
            interpolation = finished.params.frame_interpolation
            frames = await self.interpolator.run(finished.output, interpolation)
            mp4 = await asyncio.to_thread(encode_mp4, frames, finished.params.output_fps)
            previews = await asyncio.to_thread(encode_previews, frames)
            if await asyncio.to_thread(self.store.complete, job_id, mp4, previews, fence):
                logger.info("video job %s completed (fence %d)", job_id, fence)
            else:
                logger.warning("video job %s: deleted or taken over; result dropped", job_id)
        except asyncio.CancelledError:
            raise  # deleted, or the server is stopping: the store's restart policy takes over
        except LeaseLostError:
            logger.warning("video job %s: deleted or taken over; stopped here", job_id)
        except EngineOverloadedError:  # a sync or image request took the free slot first
            refused = True
            await asyncio.to_thread(self.store.requeue, job_id, fence)
        except ReplicaLostError as exc:
            rerun = await self._replica_lost(job_id, fence, exc)
        except OmniError as exc:
            await asyncio.to_thread(self.store.fail, job_id, exc.code, str(exc), fence)
        except Exception as exc:
            logger.exception("video job %s failed", job_id)
            message = f"{type(exc).__name__}: {exc}"
            await asyncio.to_thread(self.store.fail, job_id, "internal_error", message, fence)
        finally:
            if not (rerun or refused):  # the job is done with here: so is its count
                self.replica_losses.pop(job_id, None)
            if self.claims.get(job_id) == claim:
                self.running.pop(job_id, None)
                self.claims.pop(job_id, None)
            if not refused:  # after a refusal, the next try waits for the next poll
                self._wake.set()

    async def _replica_lost(self, job_id: str, fence: int, exc: ReplicaLostError) -> bool:
        """Queue the job again, from its first step, unless it has lost a replica before
        (then it fails); whether it was queued again."""
        losses = self.replica_losses.get(job_id, 0) + 1
        if losses > RERUNS_AFTER_REPLICA_LOSS:
            await asyncio.to_thread(self.store.fail, job_id, exc.code, str(exc), fence)
            return False
        self.replica_losses[job_id] = losses
        logger.warning("video job %s: its replica died; queued to run again", job_id)
        await asyncio.to_thread(self.store.requeue, job_id, fence)
        return True

    async def delete(self, job_id: str) -> bool:
        """Remove the record and file; a running job is aborted at its next step boundary."""
        deleted = await asyncio.to_thread(self.store.delete, job_id)
        task = self._stop(job_id)
        if task is not None:
            await asyncio.wait([task], timeout=CANCEL_TIMEOUT_S)
        return deleted

    def stop_dispatching(self) -> None:
        """Queued jobs stay queued in the store; running ones run on."""
        self.is_dispatching = False

    async def close(self) -> None:
        """Stop dispatching and cancel running jobs: a restart queues them again (or fails them)."""
        self.stop_dispatching()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self.starting:  # let inserts in flight finish, so their jobs are in the store
            await asyncio.wait(list(self.starting), timeout=CANCEL_TIMEOUT_S)
        tasks = list(self.running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CANCEL_TIMEOUT_S)
