"""The Videos API: durable async jobs (/v1/videos) and a synchronous endpoint (/v1/videos/sync).

A job is a record in the job store, queued there until VideoJobs hands it to the engine. The
store is the truth: every GET reads it, so a restarted server answers for the jobs before it,
and servers that share a store answer for each other's jobs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator

from aiohttp import web

from omni.http.content import send_artifact
from omni.http.errors import ApiError
from omni.http.images import cache_headers
from omni.http.schemas import json_response
from omni.http.state import ENGINE, INTERPOLATOR, SERVER_CONFIG
from omni.http.video_form import VideoForm, read_video_form
from omni.http.video_job_input import idempotency_key, request_digest
from omni.http.video_jobs import VideoJobs
from omni.interpolation.worker import Interpolator
from omni.jobs import JobStore, open_job_store
from omni.limits import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT
from omni.media import MP4_CONTENT_TYPE, encode_mp4
from omni.previews import SPRITESHEET_CONTENT_TYPE, THUMBNAIL_CONTENT_TYPE
from omni.request import GenerationParams
from omni.video_job import JobStatus, VideoJob

logger = logging.getLogger(__name__)

MIN_POLL_AFTER_MS = 200
MAX_POLL_AFTER_MS = 5000
MAX_SWEEP_INTERVAL_S = 300.0
# What GET /v1/videos/{id}/content?variant= serves, with its Content-Type (OpenAI's names).
CONTENT_VARIANTS = {
    "video": MP4_CONTENT_TYPE,
    "thumbnail": THUMBNAIL_CONTENT_TYPE,
    "spritesheet": SPRITESHEET_CONTENT_TYPE,
}
LIMIT_DIGITS = re.compile(r"[0-9]+")  # str.isdigit takes "²", which int() refuses
PRESIGNED_URL_EXPIRES_S = 300  # a redirect's URL is followed at once; a short life is enough


VIDEO_JOBS = web.AppKey("video_jobs", VideoJobs)


def add_video_routes(app: web.Application) -> None:
    """The Videos API's routes, and the store's lifetime inside the engine's."""
    app.cleanup_ctx.append(run_video_jobs)
    app.router.add_post("/v1/videos", create_video)
    app.router.add_post("/v1/videos/sync", create_video_sync)
    app.router.add_get("/v1/videos", list_videos)
    app.router.add_get("/v1/videos/{video_id}", get_video)
    app.router.add_get("/v1/videos/{video_id}/content", get_video_content)
    app.router.add_delete("/v1/videos/{video_id}", delete_video)


async def run_video_jobs(app: web.Application) -> AsyncIterator[None]:
    config = app[SERVER_CONFIG]
    owner = config.front_end_index == 0  # the others of --api-server-count run no jobs
    store = await asyncio.to_thread(
        open_job_store,
        config.storage_path,
        config.video_retention_seconds,
        config.resume_video_jobs,
        config.job_store,
        config.artifact_store,
        config.s3_endpoint_url,
        config.lease_seconds,
        owner=owner,
    )
    engine = app[ENGINE]
    interpolator = Interpolator(engine.config.torch_device)
    app[INTERPOLATOR] = interpolator
    jobs = VideoJobs(engine, store, config.max_queued_video_jobs, interpolator, owner)
    app[VIDEO_JOBS] = jobs
    await jobs.start()
    sweeps = owner and store.retention_s
    sweeper = asyncio.create_task(sweep_expired(store)) if sweeps else None
    try:
        yield
    finally:
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait([sweeper])
        await jobs.close()
        await asyncio.to_thread(interpolator.close)
        await asyncio.to_thread(store.close)


async def sweep_expired(store: JobStore) -> None:
    """Reclaim expired jobs' disk space; the store already hides them once they expire."""
    interval = min(MAX_SWEEP_INTERVAL_S, store.retention_s / 4)
    failing = False
    while True:
        try:
            removed = await asyncio.to_thread(store.delete_expired)
        except Exception:  # a full disk or a locked file must not end the sweeps
            if not failing:  # once per run of failures, not every interval
                logger.exception("removing expired video jobs failed; retrying every %gs", interval)
            failing = True
        else:
            if failing:
                logger.info("removing expired video jobs works again")
            failing = False
            if removed:
                logger.info("removed %d expired video job(s)", removed)
        await asyncio.sleep(interval)


# Handlers -------------------------------------------------------------------------------------


async def create_video(request: web.Request) -> web.Response:
    jobs = request.app[VIDEO_JOBS]
    key = idempotency_key(request.headers)
    form, params = await read_video_request(request)
    job = await jobs.submit(params, key, request_digest(form) if key is not None else None)
    return json_response(job.to_json())


async def create_video_sync(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    _, params = await read_video_request(request)
    finished = await engine.generate(params, request_id=uuid.uuid4().hex)
    interpolation = finished.params.frame_interpolation
    frames = await request.app[INTERPOLATOR].run(finished.output, interpolation)
    mp4 = await asyncio.to_thread(encode_mp4, frames, finished.params.output_fps)
    headers = {
        "x-inference-time-s": f"{finished.inference_time_s:.4f}",
        "x-queue-time-s": f"{finished.queue_time_s:.4f}",
        "x-seed": str(finished.params.seed),
    } | cache_headers([finished])
    return web.Response(body=mp4, content_type=MP4_CONTENT_TYPE, headers=headers)


async def read_video_request(request: web.Request) -> tuple[VideoForm, GenerationParams]:
    """The form and the params it resolves to; the interpolation model and the LoRA adapters it
    names are loaded (a file that is no LoRA for the model is a 400 here, not a failed job)."""
    form = await read_video_form(request)
    config = request.app[SERVER_CONFIG]
    params = await form.resolve(request.app[ENGINE], config.frame_interpolation_dir)
    if params.frame_interpolation is not None:
        await request.app[INTERPOLATOR].check(params.frame_interpolation)
    return form, params


async def get_video(request: web.Request) -> web.Response:
    job = await find_job(request)
    return json_response(job.to_json(), headers={"openai-poll-after-ms": str(poll_after_ms(job))})


async def list_videos(request: web.Request) -> web.Response:
    store = request.app[VIDEO_JOBS].store
    query = request.query
    limit = parse_limit(query.get("limit"))
    page = await asyncio.to_thread(
        store.list, query.get("after"), limit, query.get("order", "desc")
    )
    data = [job.to_json() for job in page.jobs]
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


async def get_video_content(request: web.Request) -> web.StreamResponse:
    job = await find_job(request)
    variant = request.query.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        allowed = ", ".join(CONTENT_VARIANTS)
        raise ApiError(
            400, f"variant must be one of: {allowed}; got {variant[:40]!r}", param="variant"
        )
    if job.status == JobStatus.FAILED:
        raise ApiError(
            404,
            f"video {job.id} failed and has no content: {job.error_message}",
            code="video_failed",
        )
    if job.status != JobStatus.COMPLETED:
        raise ApiError(
            409,
            f"video {job.id} is {job.status.value} ({job.progress}%): its content is not ready",
            code="video_not_ready",
            headers={"Retry-After": "1"},
        )
    return await send_variant(request, job, variant)


async def send_variant(request: web.Request, job: VideoJob, variant: str) -> web.StreamResponse:
    """The MP4 or a preview; each file's ETag is the job id and variant, as none ever changes."""
    store = request.app[VIDEO_JOBS].store
    if request.app[SERVER_CONFIG].presigned_urls:
        url = await asyncio.to_thread(store.artifact_url, job.id, variant, PRESIGNED_URL_EXPIRES_S)
        if url is not None:  # a store with no URLs of its own streams instead
            raise web.HTTPTemporaryRedirect(url)
    if variant == "video":
        # Deleted since the lookup, or removed behind the store's back.
        missing = ApiError(404, f"video {job.id} has no content any more", code="video_not_found")
        etag = f'"{job.id}"'
    else:
        missing = ApiError(
            404,
            f"video {job.id} has no {variant} (deleted, or completed by a server that made none)",
            code="video_not_found",
        )
        etag = f'"{job.id}-{variant}"'
    return await send_artifact(
        request,
        lambda: store.open_artifact(job.id, variant),
        CONTENT_VARIANTS[variant],
        etag,
        missing,
    )


async def delete_video(request: web.Request) -> web.Response:
    job = await find_job(request)
    if not await request.app[VIDEO_JOBS].delete(job.id):  # another DELETE got there first
        raise ApiError(404, f"no video with id {job.id!r}", code="video_not_found")
    return json_response({"id": job.id, "object": "video.deleted", "deleted": True})


async def find_job(request: web.Request) -> VideoJob:
    video_id = request.match_info["video_id"]
    job = await asyncio.to_thread(request.app[VIDEO_JOBS].store.get, video_id)
    if job is None:
        raise ApiError(404, f"no video with id {video_id!r}", code="video_not_found")
    return job


def parse_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIST_LIMIT
    if not LIMIT_DIGITS.fullmatch(text.strip()):
        raise ApiError(400, f"limit must be an integer, got {text[:40]!r}", param="limit")
    digits = text.strip().lstrip("0") or "0"
    if len(digits) > len(str(MAX_LIST_LIMIT)):  # int() refuses 4,301 digits and more
        raise ApiError(
            400,
            f"limit must be between 1 and {MAX_LIST_LIMIT}, got a {len(digits)}-digit number",
            param="limit",
        )
    return int(digits)


def poll_after_ms(job: VideoJob) -> int:
    """Poll often while a job is young and less as it runs on: a tenth of its age so far."""
    age_ms = max(0.0, time.time() - job.created_at) * 1000
    return int(min(MAX_POLL_AFTER_MS, max(MIN_POLL_AFTER_MS, age_ms / 10)))
