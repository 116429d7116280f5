"""Server configuration: the engine's config plus what only the HTTP side needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omni.config import EngineConfig
from omni.jobs import DEFAULT_LEASE_S, check_store_urls
from omni.limits import DEFAULT_MAX_QUEUED_VIDEO_JOBS

DEFAULT_STORAGE_PATH = Path.home() / ".cache" / "omni" / "storage"
DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024  # room for an image-to-video reference upload
DEFAULT_KEEPALIVE_TIMEOUT_S = 15.0
DEFAULT_REQUEST_TIMEOUT_S = 60.0  # 32 MiB at about 4 Mbit/s
DEFAULT_SEND_TIMEOUT_S = 60.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
MAX_API_SERVER_COUNT = 64  # front-end processes sharing the port (--api-server-count)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    engine: EngineConfig = field(default_factory=EngineConfig)
    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <api_key>"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    storage_path: Path = DEFAULT_STORAGE_PATH  # video jobs and their files
    video_retention_seconds: int | None = None  # finished jobs expire after this; None: kept
    max_queued_video_jobs: int = DEFAULT_MAX_QUEUED_VIDEO_JOBS  # beyond: POST /v1/videos is 503
    resume_video_jobs: bool = True  # after a restart, run the jobs that were running again
    job_store: str | None = None  # postgresql://... shared by servers; None: SQLite in storage
    artifact_store: str | None = None  # s3://bucket/prefix; None: files in storage_path
    s3_endpoint_url: str | None = None  # an S3-compatible server other than AWS
    presigned_urls: bool = False  # /content redirects (307) to the S3 artifact store
    lease_seconds: float = DEFAULT_LEASE_S  # a running job's owner renews it within this
    # The allow-list root of RIFE models a video request may name; None: only the built-in one.
    frame_interpolation_dir: Path | None = None
    access_log: bool = False
    playground: bool = True  # the page at GET / that makes images and videos in a browser
    # A connection closes when no whole request head arrives this long after it opened or
    # after its last answer: idle keep-alive and slowloris heads alike.
    keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT_S
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S  # for a body, from its head on: else 408
    send_timeout: float = DEFAULT_SEND_TIMEOUT_S  # a client that reads nothing this long is cut
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S  # after SIGTERM, for work in flight
    data_parallel_size: int = 1  # engine replicas; more than one runs them on Ray Serve
    ray_address: str | None = None  # a Ray cluster to join (auto or HOST:PORT); None: a local one
    api_server_count: int = 1  # front-end processes on the port; above 1 needs the replicas
    # Which of them this process is: 0 starts the others and runs the video job worker.
    front_end_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be at least 1024, got {self.max_body_bytes}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty")
        if self.video_retention_seconds is not None and self.video_retention_seconds < 1:
            raise ValueError("video_retention_seconds must be at least 1")
        check_store_urls(self.job_store, self.artifact_store)
        if self.presigned_urls and self.artifact_store is None:
            raise ValueError("presigned_urls needs an artifact_store (--artifact-store s3://...)")
        if self.s3_endpoint_url is not None and self.artifact_store is None:
            raise ValueError("s3_endpoint_url needs an artifact_store (--artifact-store s3://...)")
        if not self.lease_seconds > 0:
            raise ValueError("lease_seconds must be a positive number of seconds")
        if self.frame_interpolation_dir is not None and not self.frame_interpolation_dir.is_dir():
            raise ValueError(
                f"frame_interpolation_dir {self.frame_interpolation_dir} is not a directory"
            )
        if self.max_queued_video_jobs < 1:
            raise ValueError("max_queued_video_jobs must be at least 1")
        for name in ("keepalive_timeout", "request_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.data_parallel_size < 1:
            raise ValueError("data_parallel_size must be at least 1")
        if not self.shutdown_timeout >= 0:
            raise ValueError("shutdown_timeout must be a number of seconds, 0 or more")
        self._check_front_ends()

    def _check_front_ends(self) -> None:
        if not 1 <= self.api_server_count <= MAX_API_SERVER_COUNT:
            raise ValueError(
                f"--api-server-count must be between 1 and {MAX_API_SERVER_COUNT}, "
                f"got {self.api_server_count}"
            )
        if self.api_server_count > 1 and not self.uses_replicas:
            raise ValueError(
                "--api-server-count above 1 needs the engine on Ray (--data-parallel-size N or "
                "--ray-address): an engine inside one process cannot be shared by several"
            )
        if not 0 <= self.front_end_index < self.api_server_count:
            raise ValueError(
                f"front_end_index must be below api_server_count, got {self.front_end_index}"
            )

    @property
    def uses_replicas(self) -> bool:
        """Whether the engine runs as replicas on a Ray cluster rather than in this process."""
        return self.data_parallel_size > 1 or self.ray_address is not None
