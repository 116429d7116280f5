"""Artifacts in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through boto3.

`s3://bucket/prefix` names where they go; credentials and region come from boto3's usual places
(AWS_ACCESS_KEY_ID, ~/.aws, an instance role). Large artifacts go up in parts (multipart upload),
reads fetch byte ranges, and a presigned URL lets clients download straight from the bucket.
"""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import urlsplit

MULTIPART_THRESHOLD_BYTES = 8 * 1024 * 1024  # S3 takes parts of 5 MiB and more
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix), the prefix ending in "/" or empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"an artifact store must be s3://BUCKET[/PREFIX], got {url!r}")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Reader:
    """An object read from any offset on: each seek starts a ranged GET at the next read."""

    def __init__(self, client: Any, bucket: str, key: str, size: int) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self.size = size
        self._offset = 0
        self._body: Any = None

    def seek(self, offset: int) -> object:
        self.close()
        self._offset = offset
        return offset

    def read(self, size: int) -> bytes:
        if self._offset >= self.size:
            return b""
        if self._body is None:
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=f"bytes={self._offset}-"
            )
            self._body = answer["Body"]
        chunk = self._body.read(size)
        self._offset += len(chunk)
        return chunk

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class S3Artifacts:
    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD_BYTES,
    ) -> None:
        import boto3  # an optional dependency: pip install -e ".[cluster]"
        from boto3.s3.transfer import TransferConfig

        self.bucket, self.prefix = parse_s3_url(url)
        self.client = boto3.client("s3", endpoint_url=endpoint_url)
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )
        self.client.head_bucket(Bucket=self.bucket)  # fail at start, not at the first job

    def key(self, name: str) -> str:
        return self.prefix + name

    def put(self, name: str, data: bytes) -> None:
        # A multipart upload becomes visible only when it completes: never a part of an object.
        self.client.upload_fileobj(
            io.BytesIO(data), self.bucket, self.key(name), Config=self._transfer
        )

    def open(self, name: str) -> S3Reader:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in MISSING_CODES:
                raise FileNotFoundError(name) from None
            raise
        return S3Reader(self.client, self.bucket, self.key(name), head["ContentLength"])

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def presigned_url(self, name: str, expires_s: int) -> str | None:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.key(name)},
            ExpiresIn=expires_s,
        )

    def sweep(self, keep: set[str]) -> None:
        """Nothing: a partial upload is never an object, and a bucket may be shared."""
