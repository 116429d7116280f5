"""The HTTP side's flags of `python -m omni.serve` (ServerConfig fields): the server, where video
jobs are kept, and the engine replicas. omni.flags builds the parser from these groups."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from omni.http.config import (
    DEFAULT_KEEPALIVE_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    DEFAULT_SEND_TIMEOUT_S,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    DEFAULT_STORAGE_PATH,
    MAX_API_SERVER_COUNT,
)
from omni.jobs import DEFAULT_LEASE_S
from omni.limits import DEFAULT_MAX_QUEUED_VIDEO_JOBS

API_KEY_ENV = "OMNI_API_KEY"
STORAGE_PATH_ENVS = ("OMNI_STORAGE_PATH", "VLLM_OMNI_STORAGE_PATH")  # the seed docs' name too


def add_server_arguments(group: argparse._ArgumentGroup) -> None:
    """Where the server listens, whom it answers, how large a request may be."""
    group.add_argument("--host", default="127.0.0.1")
    group.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    group.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer <key>' on /v1/* (env {API_KEY_ENV})",
    )
    group.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)


def add_video_job_arguments(group: argparse._ArgumentGroup) -> None:
    """Where video jobs and their files are kept, for how long, and what a restart does."""
    group.add_argument(
        "--storage-path",
        type=Path,
        default=default_storage_path(),
        help=f"where video jobs are kept (env {' or '.join(STORAGE_PATH_ENVS)})",
    )
    group.add_argument(
        "--video-retention-seconds",
        type=int,
        default=None,
        help="finished video jobs (record and file) expire this long after they finish "
        "(default: kept until deleted)",
    )
    group.add_argument(
        "--max-queued-video-jobs",
        type=int,
        default=DEFAULT_MAX_QUEUED_VIDEO_JOBS,
        help="accepted video jobs waiting in the store for the engine; beyond this, POST "
        "/v1/videos gets 503 with Retry-After",
    )
    group.add_argument(
        "--no-resume",
        dest="resume_video_jobs",
        action="store_false",
        help="after a restart, fail the video jobs that were running (code server_restarted) "
        "instead of running them again; queued jobs run either way",
    )
    add_store_arguments(group)
    group.add_argument(
        "--frame-interpolation-dir",
        type=Path,
        default=None,
        help="the directory whose subdirectories (each holding RIFE's flownet.pkl) video "
        "requests may name as frame_interpolation_model_path; its own flownet.pkl, if any, is "
        "the default (without it, only the built-in omni-tiny-rife is taken)",
    )


def add_http_arguments(group: argparse._ArgumentGroup) -> None:
    """The access log, the playground page, and how long clients and a shutdown may take."""
    group.add_argument("--access-log", action="store_true", help="log one line per request")
    group.add_argument(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="do not serve the playground page at / and /playground",
    )
    group.add_argument(
        "--keepalive-timeout",
        type=float,
        default=DEFAULT_KEEPALIVE_TIMEOUT_S,
        help="seconds a connection may wait for a whole request head, after it opens or after "
        "its last answer (idle keep-alive, slowloris)",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds a request body may take to arrive after its head (else 408)",
    )
    group.add_argument(
        "--send-timeout",
        type=float,
        default=DEFAULT_SEND_TIMEOUT_S,
        help="seconds a client may read nothing of an answer before it is disconnected",
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        help="after SIGTERM, seconds that requests and video jobs in flight may take to finish "
        "(new ones get 503); queued video jobs stay queued for the next start",
    )


def add_store_arguments(group: argparse._ArgumentGroup) -> None:
    """Where video jobs and their files are kept, when not in --storage-path."""
    group.add_argument(
        "--job-store",
        default=None,
        metavar="postgresql://...",
        help="keep video jobs in Postgres, shared by every server given the same URL (pip "
        "install -e '.[cluster]'); default: SQLite in --storage-path, for this server alone",
    )
    group.add_argument(
        "--artifact-store",
        default=None,
        metavar="s3://BUCKET/PREFIX",
        help="keep finished videos in an S3-compatible bucket; default: files in --storage-path",
    )
    group.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="the S3-compatible server's URL (MinIO, Ceph, ...); default: AWS",
    )
    group.add_argument(
        "--presigned-urls",
        action="store_true",
        help="GET /v1/videos/{id}/content redirects (307) to a presigned URL of the artifact "
        "store instead of streaming it through this server",
    )
    group.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_S,
        help="a running video job whose server has not renewed it this long is queued again "
        "for any server (renewed three times a lease)",
    )


def add_replica_arguments(group: argparse._ArgumentGroup) -> None:
    """Engine replicas on Ray Serve, and the front ends sharing them."""
    group.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        help="engine replicas, each with its own GPU (a CPU share without GPUs), run as a Ray "
        "Serve deployment behind this server; more than 1 starts a local Ray cluster unless "
        "--ray-address joins one",
    )
    group.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (auto: the one started on this node with `ray start`, or "
        "HOST:PORT) and run the replicas on it",
    )
    group.add_argument(
        "--api-server-count",
        type=int,
        default=1,
        help="HTTP front-end processes sharing --port (SO_REUSEPORT, Linux), all sending to "
        f"the same replicas; more than 1 needs --data-parallel-size or --ray-address (at most "
        f"{MAX_API_SERVER_COUNT})",
    )


def default_storage_path() -> Path:
    for name in STORAGE_PATH_ENVS:
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    return DEFAULT_STORAGE_PATH
