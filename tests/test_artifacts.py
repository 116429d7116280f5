"""The artifact stores, local and S3 (moto's server): whole writes, ranged reads, deletes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from omni.jobs.artifacts import ArtifactStore, LocalArtifacts

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifacts(tmp_path)
    from omni.jobs.s3 import S3Artifacts
    from tests.services import new_bucket

    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Artifacts(f"s3://{new_bucket(endpoint)}/some/prefix", endpoint)


def read_all(artifacts: ArtifactStore, name: str, offset: int = 0) -> bytes:
    reader = artifacts.open(name)
    try:
        reader.seek(offset)
        chunks = []
        while chunk := reader.read(1000):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        reader.close()


def test_an_artifact_is_read_whole_or_from_an_offset_and_deleted(artifacts: ArtifactStore) -> None:
    data = os.urandom(5000)
    artifacts.put("video_x.mp4", data)

    assert artifacts.open("video_x.mp4").size == len(data)
    assert read_all(artifacts, "video_x.mp4") == data
    assert read_all(artifacts, "video_x.mp4", offset=4321) == data[4321:]
    artifacts.put("video_x.mp4", b"replaced")
    assert read_all(artifacts, "video_x.mp4") == b"replaced"
    artifacts.delete("video_x.mp4")
    with pytest.raises(FileNotFoundError):
        artifacts.open("video_x.mp4")
    artifacts.delete("video_x.mp4")  # deleting what is gone is no error


def test_a_large_artifact_goes_to_s3_in_parts(s3_endpoint: str) -> None:
    from omni.jobs.s3 import S3Artifacts
    from tests.services import new_bucket

    store = S3Artifacts(f"s3://{new_bucket(s3_endpoint)}", s3_endpoint, multipart_threshold=5 * MIB)
    data = os.urandom(11 * MIB)
    store.put("video_big.mp4", data)

    head = store.client.head_object(Bucket=store.bucket, Key="video_big.mp4")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload's ETag counts its parts
    assert read_all(store, "video_big.mp4", offset=6 * MIB) == data[6 * MIB :]


def test_a_presigned_url_downloads_the_artifact(s3_endpoint: str) -> None:
    from omni.jobs.s3 import S3Artifacts
    from tests.services import new_bucket

    store = S3Artifacts(f"s3://{new_bucket(s3_endpoint)}/p", s3_endpoint)
    store.put("video_y.mp4", b"movie")

    url = store.presigned_url("video_y.mp4", 60)
    assert "Signature" in url or "X-Amz-Signature" in url
    assert requests.get(url, timeout=10).content == b"movie"


@pytest.mark.parametrize(
    "url", ["s3://", "http://bucket/x", "s3://bucket?x=1", "bucket/prefix"], ids=str
)
def test_a_bad_artifact_store_url_is_refused(url: str, s3_endpoint: str) -> None:
    from omni.jobs.s3 import S3Artifacts

    with pytest.raises(ValueError, match="s3://BUCKET"):
        S3Artifacts(url, s3_endpoint)
