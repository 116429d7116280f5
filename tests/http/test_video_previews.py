"""The thumbnail and spritesheet variants of a finished job's content, and their storage."""

from __future__ import annotations

import io
from pathlib import Path

import openai
import pytest
import requests
from openai import OpenAI
from PIL import Image

from omni.previews import sprite_indices
from omni.storage import PREVIEW_FILES, VideoStore
from tests.http.servers import VIDEO_SERVED_NAME
from tests.http.videos import assert_error, client, quick_job, wait_for_job
from tests.storage.helpers import make_job

__all__ = ["client"]  # the module fixture, shared


def finished_job(client: OpenAI) -> str:
    video = client.videos.create_and_poll(
        prompt="previews",
        model=VIDEO_SERVED_NAME,
        size="48x32",
        extra_body={"num_frames": 9, "fps": 8, "num_inference_steps": 1, "seed": 3},
    )
    assert video.status == "completed"
    return video.id


def test_sdk_downloads_a_thumbnail_and_a_spritesheet(client: OpenAI) -> None:
    video_id = finished_job(client)
    thumbnail = client.videos.download_content(video_id, variant="thumbnail")
    assert thumbnail.response.headers["content-type"] == "image/webp"
    image = Image.open(io.BytesIO(thumbnail.content))
    assert (image.format, image.size) == ("WEBP", (48, 32))

    sheet = client.videos.download_content(video_id, variant="spritesheet")
    assert sheet.response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(sheet.content))
    assert image.format == "JPEG"
    assert image.size == (3 * 48, 3 * 32)  # 9 frames: a 3 x 3 grid


def test_an_unknown_variant_is_400_naming_the_allowed_ones(client: OpenAI, video_url: str) -> None:
    job = quick_job(video_url)
    wait_for_job(video_url, job["id"])
    url = f"{video_url}/v1/videos/{job['id']}/content"
    response = requests.get(url, params={"variant": "poster"}, timeout=10)
    assert_error(response, 400, "variant must be one of: video, thumbnail, spritesheet")
    with pytest.raises(openai.BadRequestError):
        client.videos.download_content(job["id"], variant="poster")  # type: ignore[arg-type]


def test_previews_have_their_own_etag_and_ranges(video_url: str) -> None:
    job = quick_job(video_url)
    wait_for_job(video_url, job["id"])
    url = f"{video_url}/v1/videos/{job['id']}/content"
    whole = requests.get(url, params={"variant": "thumbnail"}, timeout=10)
    etag = whole.headers["ETag"]
    assert etag == f'"{job["id"]}-thumbnail"'
    part = requests.get(url, params={"variant": "thumbnail"}, headers={"Range": "bytes=0-3"})
    assert (part.status_code, part.content) == (206, whole.content[:4])
    again = requests.get(url, params={"variant": "thumbnail"}, headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_sprite_indices_are_evenly_spaced_first_to_last() -> None:
    assert sprite_indices(1) == [0]
    assert sprite_indices(5) == [0, 1, 2, 3, 4]
    indices = sprite_indices(81)
    assert (len(indices), indices[0], indices[-1]) == (16, 0, 80)


def test_previews_survive_a_reopen_and_go_with_the_job(tmp_path: Path) -> None:
    store = VideoStore(tmp_path)
    job = make_job()
    store.create(job)
    previews = {variant: variant.encode() for variant in PREVIEW_FILES}
    assert store.complete(job.id, b"frames", previews)
    store.close()
    reopened = VideoStore(tmp_path)  # the restart sweep keeps a completed job's files
    try:
        for variant in PREVIEW_FILES:
            assert reopened.preview_path(job.id, variant).read_bytes() == variant.encode()
        assert reopened.delete(job.id)
        assert sorted(p.name for p in tmp_path.glob(f"{job.id}*")) == []
    finally:
        reopened.close()
