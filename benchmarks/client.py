"""Sends one workload request to a server and records what happened, as the client saw it."""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import aiohttp

from benchmarks.metrics import RequestRecord
from benchmarks.workload import RequestSpec

IMAGES_PATH = "/v1/images/generations"
VIDEOS_SYNC_PATH = "/v1/videos/sync"
QUEUE_TIME_HEADER = "x-queue-time-s"
INFERENCE_TIME_HEADER = "x-inference-time-s"
ALLOWED_HOSTS = ("127.0.0.1",)


def check_local_url(url: str) -> str:
    """The benchmark only ever talks to servers on this machine's loopback address."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in ALLOWED_HOSTS:
        raise ValueError(f"only http://127.0.0.1:PORT targets are allowed, got {url!r}")
    return url.rstrip("/")


def image_body(spec: RequestSpec) -> dict:
    c = spec.request_class
    body = {
        "prompt": spec.prompt,
        "n": c.n,
        "size": f"{c.width}x{c.height}",
        "response_format": "b64_json",
        "num_inference_steps": c.num_inference_steps,
        "seed": spec.seed,
        "guidance_scale": c.guidance_scale,
        "true_cfg_scale": c.true_cfg_scale,
        "negative_prompt": c.negative_prompt,
    }
    return {key: value for key, value in body.items() if value is not None}


def video_form(spec: RequestSpec) -> aiohttp.FormData:
    c = spec.request_class
    fields = {
        "prompt": spec.prompt,
        "width": c.width,
        "height": c.height,
        "num_frames": c.num_frames,
        "fps": c.fps,
        "num_inference_steps": c.num_inference_steps,
        "seed": spec.seed,
        "guidance_scale": c.guidance_scale,
        "true_cfg_scale": c.true_cfg_scale,
        "negative_prompt": c.negative_prompt,
    }
    form = aiohttp.FormData()
    for key, value in fields.items():
        if value is not None:
            form.add_field(key, str(value))
    return form


def header_seconds(headers: aiohttp.typedefs.LooseHeaders, name: str) -> float | None:
    value = headers.get(name)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def send(session: aiohttp.ClientSession, base_url: str, spec: RequestSpec) -> RequestRecord:
    """POST one request and read the whole answer; never raises for a failed request."""
    c = spec.request_class
    record = RequestRecord(c.name, num_images=c.n, start=time.monotonic(), end=0.0, ok=False)
    try:
        if c.kind == "video":
            request = session.post(base_url + VIDEOS_SYNC_PATH, data=video_form(spec))
        else:
            request = session.post(base_url + IMAGES_PATH, json=image_body(spec))
        async with request as response:
            body = await response.read()
            record.status = response.status
            record.queue_time_s = header_seconds(response.headers, QUEUE_TIME_HEADER)
            record.inference_time_s = header_seconds(response.headers, INFERENCE_TIME_HEADER)
            record.ok, record.error = check_body(response.status, body, c.kind, c.n)
    except (TimeoutError, aiohttp.ClientError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.end = time.monotonic()
    return record


def check_body(status: int, body: bytes, kind: str, n: int) -> tuple[bool, str | None]:
    if status != 200:
        return False, error_message(body)
    if kind == "video":
        return (True, None) if body else (False, "empty video body")
    try:
        images = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        return False, "response is not an images JSON object"
    if len(images) != n or not all(item.get("b64_json") for item in images):
        return False, f"expected {n} b64_json images, got {len(images)}"
    return True, None


def error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace")
