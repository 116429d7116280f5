"""What identifies a video request (its Idempotency-Key and digest) and how its input is kept in
the job store: the resolved params as JSON, the reference image as a PNG beside them."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import replace

import msgspec
from PIL import Image

from omni.http.errors import ApiError
from omni.http.video_form import VideoForm
from omni.limits import MAX_IDEMPOTENCY_KEY_CHARS
from omni.request import GenerationParams
from omni.video_job import JobInput, KeyedJob, VideoJob


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(
            400,
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters, got {len(key)}",
            code="invalid_idempotency_key",
            param="Idempotency-Key",
        )
    return key


def request_digest(form: VideoForm) -> str:
    """Equal for two sends of one request, however their bodies were encoded."""
    hasher = hashlib.sha256(msgspec.json.encode(form.request))
    if form.image is not None:
        hasher.update(f"{form.image.mode} {form.image.size}".encode())
        hasher.update(form.image.tobytes())
    return hasher.hexdigest()


def same_request(held: KeyedJob, digest: str | None, key: str | None) -> VideoJob:
    """The job that holds the key, if it was made from this very request; else 409."""
    if held.request_digest is not None and held.request_digest != digest:
        raise ApiError(
            409,
            f"Idempotency-Key {key!r} was used for another request (video {held.job.id}); "
            "use a new key for a new request",
            code="idempotency_key_reused",
            param="Idempotency-Key",
        )
    return held.job


def encode_input(params: GenerationParams) -> JobInput:
    """The resolved params as JSON, the reference image (if any) as a PNG beside them."""
    image = None
    if params.image is not None:
        buffer = io.BytesIO()
        params.image.save(buffer, format="PNG")
        image = buffer.getvalue()
    return JobInput(msgspec.json.encode(replace(params, image=None)), image)


def decode_input(job_input: JobInput) -> GenerationParams:
    params = msgspec.json.decode(job_input.params, type=GenerationParams)
    if job_input.reference_image is None:
        return params
    image = Image.open(io.BytesIO(job_input.reference_image))
    image.load()
    return replace(params, image=image)
