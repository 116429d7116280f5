"""The server a user would build without omni: aiohttp in front of a diffusers pipeline.

    python -m benchmarks.baseline_server --model omni-tiny --mode sequential --port 8001

``sequential`` runs one request per pipeline ``__call__``, in arrival order. ``batched`` is
request-level batching: when the pipeline frees up it takes the oldest waiting request plus every
waiting request whose parameters are identical except prompt and seed, and runs them as one call
(a list of prompts, a list of generators); the batch then runs to its end before anyone joins.
The pipeline runs in a worker thread so the event loop keeps accepting requests.

It answers POST /v1/images/generations like omni does (same body, same response, the same
x-queue-time-s and x-inference-time-s headers), GET /health and GET /v1/stats.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from aiohttp import web
from diffusers import DiffusionPipeline
from PIL import Image

from benchmarks.baseline_params import BadRequest, ImageParams, parse_params
from omni.config import EngineConfig
from omni.models import resolve_model_dir
from omni.models.base import ServingDefaults

logger = logging.getLogger("benchmarks.baseline")


@dataclass(eq=False)
class Job:
    params: ImageParams
    future: asyncio.Future[list[Image.Image]]
    arrival: float = field(default_factory=time.monotonic)
    first_step: float | None = None
    finished: float | None = None


class PipelineWorker:
    """Owns the pipeline: takes jobs from a queue and runs one pipeline call at a time."""

    def __init__(self, pipe: DiffusionPipeline, device: torch.device, max_batch_images: int):
        self.pipe = pipe
        self.device = device
        self.max_batch_images = max_batch_images
        self.waiting: deque[Job] = deque()
        self.wakeup = asyncio.Event()
        self.stats: dict[str, Any] = {
            "num_finished": 0,
            "num_failed": 0,
            "num_calls": 0,
            "batch_size_counts": {},  # requests per pipeline call
        }
        tokenizer_2 = getattr(pipe, "tokenizer_2", None)
        self.extra_kwargs = (
            {"max_sequence_length": min(512, tokenizer_2.model_max_length)} if tokenizer_2 else {}
        )

    def submit(self, job: Job) -> None:
        self.waiting.append(job)
        self.wakeup.set()

    def take_batch(self) -> list[Job]:
        first = self.waiting.popleft()
        batch = [first]
        for job in list(self.waiting):
            if (len(batch) + 1) * first.params.n > self.max_batch_images:
                break
            if job.params.batch_key == first.params.batch_key:
                self.waiting.remove(job)
                batch.append(job)
        return batch

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.waiting:
                batch = self.take_batch()
                try:
                    images = await asyncio.to_thread(self.call_pipeline, batch)
                except Exception as exc:
                    logger.exception("pipeline call failed for %d request(s)", len(batch))
                    self.stats["num_failed"] += len(batch)
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self.record(batch)
                n = batch[0].params.n
                for index, job in enumerate(batch):
                    if not job.future.done():
                        job.future.set_result(images[index * n : (index + 1) * n])

    def record(self, batch: list[Job]) -> None:
        counts = self.stats["batch_size_counts"]
        counts[len(batch)] = counts.get(len(batch), 0) + 1
        self.stats["num_calls"] += 1
        self.stats["num_finished"] += len(batch)

    def call_pipeline(self, batch: list[Job]) -> list[Image.Image]:
        params = batch[0].params

        def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            if step == 0:
                now = time.monotonic()
                for job in batch:
                    job.first_step = now
            return {}

        negative = params.negative_prompt
        generators = [
            torch.Generator("cpu").manual_seed(job.params.seed + index)
            for job in batch
            for index in range(params.n)
        ]
        images = self.pipe(
            prompt=[job.params.prompt for job in batch],
            negative_prompt=[negative] * len(batch) if negative is not None else None,
            true_cfg_scale=params.true_cfg_scale,
            width=params.width,
            height=params.height,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            num_images_per_prompt=params.n,
            generator=generators,
            callback_on_step_end=on_step_end,
            **self.extra_kwargs,
        ).images
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.monotonic()
        for job in batch:
            job.finished = now
        return images


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return web.json_response({"error": error}, status=status)


WORKER = web.AppKey("worker", PipelineWorker)
DEFAULTS = web.AppKey("defaults", ServingDefaults)


async def generate(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    try:
        body = await request.json()
    except ValueError:
        return error_response(400, "the body is not valid JSON")
    try:
        params = parse_params(body, request.app[DEFAULTS], seed=int(time.time_ns() % 2**31))
    except BadRequest as exc:
        return error_response(400, str(exc), exc.param)
    job = Job(params, asyncio.get_running_loop().create_future())
    worker.submit(job)
    try:
        images = await job.future
    except Exception as exc:
        return error_response(500, f"generation failed: {type(exc).__name__}: {exc}")
    encoded = await asyncio.gather(*(asyncio.to_thread(encode_png, image) for image in images))
    headers = {
        "x-queue-time-s": f"{(job.first_step or job.finished) - job.arrival:.6f}",
        "x-inference-time-s": f"{job.finished - job.arrival:.6f}",
    }
    data = [{"b64_json": b64, "url": None, "revised_prompt": None} for b64 in encoded]
    return web.json_response({"created": int(time.time()), "data": data}, headers=headers)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    worker = request.app[WORKER]
    return web.json_response({**worker.stats, "num_waiting": len(worker.waiting)})


def build_app(
    pipe: DiffusionPipeline, device: torch.device, defaults: ServingDefaults, max_batch_images: int
) -> web.Application:
    app = web.Application(client_max_size=16 * 2**20)
    app[WORKER] = PipelineWorker(pipe, device, max_batch_images)
    app[DEFAULTS] = defaults

    async def worker_task(app: web.Application):
        task = asyncio.create_task(app[WORKER].run())
        yield
        task.cancel()

    app.cleanup_ctx.append(worker_task)
    app.router.add_post("/v1/images/generations", generate)
    app.router.add_get("/health", health)
    app.router.add_get("/v1/stats", stats)
    return app


def load_pipeline(
    model: str, device: str, dtype: str
) -> tuple[DiffusionPipeline, torch.device, ServingDefaults]:
    config = EngineConfig(model=model, device=device, dtype=dtype)
    model_dir = resolve_model_dir(model)
    pipe = DiffusionPipeline.from_pretrained(model_dir, dtype=config.torch_dtype)
    pipe = pipe.to(config.torch_device)
    pipe.set_progress_bar_config(disable=True)
    side = pipe.default_sample_size * pipe.vae_scale_factor
    defaults = ServingDefaults.read(
        model_dir, width=side, height=side, num_inference_steps=28, guidance_scale=3.5
    )
    return pipe, config.torch_device, defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="omni-tiny", help="a built-in name or a pipeline dir")
    parser.add_argument("--mode", choices=("sequential", "batched"), default="sequential")
    parser.add_argument("--max-batch-size", type=int, default=8, help="images per call (batched)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pipe, device, defaults = load_pipeline(args.model, args.device, args.dtype)
    max_batch = args.max_batch_size if args.mode == "batched" else 1
    app = build_app(pipe, device, defaults, max_batch)
    logger.info("baseline (%s) serving %s on %s:%d", args.mode, args.model, args.host, args.port)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
