"""The flags of `python -m omni.serve`. Each sets the config field of its name (EngineConfig or
ServerConfig), and every field but the internal `front_end_index` has one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from omni.config import ATTENTION_BACKENDS, DTYPES, EngineConfig
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
from omni.limits import CACHE_TYPES, DEFAULT_MAX_QUEUED_VIDEO_JOBS, MAX_LORA_SCALE
from omni.scheduler import POLICIES

API_KEY_ENV = "OMNI_API_KEY"
STORAGE_PATH_ENVS = ("OMNI_STORAGE_PATH", "VLLM_OMNI_STORAGE_PATH")  # the seed docs' name too
DEFAULTS = EngineConfig()


def positive_or_auto(value: str) -> int | None:
    if value == "auto":
        return None
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be a positive integer or auto")
    return number


def lora_module(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m omni.serve",
        description="Serve a diffusion model behind an OpenAI-compatible HTTP API.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    model = parser.add_argument_group("model and engine")
    model.add_argument(
        "--model",
        default="omni-tiny",
        help="a built-in model (omni-tiny, omni-tiny-video), a local diffusers directory, "
        "or a hub id already in the local Hugging Face cache",
    )
    model.add_argument(
        "--served-model-name", default=None, help="the name clients use (default: --model)"
    )
    model.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    model.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])
    scheduler = parser.add_argument_group("scheduling")
    scheduler.add_argument(
        "--max-num-batched-tokens",
        type=positive_or_auto,
        default="auto",
        help="one forward's budget: rows x padded sequence length, CFG rows included; auto "
        "is the knee of a short profile of the model at start-up (logged, and in /v1/stats)",
    )
    scheduler.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help="hard cap on rows in one forward (real CFG takes two)",
    )
    scheduler.add_argument(
        "--max-num-running",
        type=int,
        default=DEFAULTS.max_num_running,
        help="requests holding latents at once",
    )
    scheduler.add_argument(
        "--max-num-waiting",
        type=int,
        default=DEFAULTS.max_num_waiting,
        help="queued requests; beyond this, requests get 503 with Retry-After",
    )
    scheduler.add_argument(
        "--scheduling-policy",
        choices=list(POLICIES),
        default=DEFAULTS.scheduling_policy,
        help="fcfs: arrival order; priority: the request field `priority`, lower first; "
        "shortest: fewest remaining steps first",
    )
    scheduler.add_argument(
        "--max-starvation-steps",
        type=int,
        default=DEFAULTS.max_starvation_steps,
        help="a request not run for this many engine steps goes ahead of every other",
    )
    scheduler.add_argument(
        "--no-overlap-stages",
        dest="overlap_stages",
        action="store_false",
        help="encode and decode inside the engine step instead of on a worker thread",
    )
    scheduler.add_argument(
        "--profile-seconds",
        type=float,
        default=DEFAULTS.profile_seconds,
        help="time limit of the start-up profile that sets --max-num-batched-tokens auto",
    )
    model.add_argument("--cfg-parallel-size", type=int, default=1, choices=[1, 2])
    model.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    model.add_argument(
        "--cache",
        choices=CACHE_TYPES,
        default=DEFAULTS.cache,
        help="step caching for requests that do not choose: fbcache (First-Block Cache, decided "
        "per request and row), taylorseer (TaylorSeer, diffusers' schedule, per request) or none",
    )
    model.add_argument(
        "--cache-threshold",
        type=float,
        default=None,
        help="the --cache fbcache threshold (default 0.05; taylorseer takes none); a request's "
        "`cache` field may set its own",
    )
    model.add_argument(
        "--max-output-pixels",
        type=int,
        default=None,
        help="most width x height x frames one image or video may have (default: the model's "
        "own limits)",
    )
    lora = parser.add_argument_group("LoRA")
    lora.add_argument(
        "--lora-modules",
        type=lora_module,
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="adapters requests may name in their `lora` field (a LoRA .safetensors file, or a "
        "directory holding pytorch_lora_weights.safetensors)",
    )
    lora.add_argument(
        "--lora-dir",
        default=None,
        help="a request's lora local_path is accepted only inside this directory (after "
        "resolving symlinks and ..); without it only --lora-modules names are accepted",
    )
    lora.add_argument(
        "--max-loras",
        type=int,
        default=DEFAULTS.max_loras,
        help="adapters held on the device at once; the least recently used is evicted",
    )
    lora.add_argument(
        "--max-lora-rank",
        type=int,
        default=DEFAULTS.max_lora_rank,
        help=f"adapters of a higher rank are refused (scales are bounded by ±{MAX_LORA_SCALE:g})",
    )

    server = parser.add_argument_group("HTTP server")
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    server.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV),
        help=f"require 'Authorization: Bearer <key>' on /v1/* (env {API_KEY_ENV})",
    )
    server.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    server.add_argument(
        "--storage-path",
        type=Path,
        default=default_storage_path(),
        help=f"where video jobs are kept (env {' or '.join(STORAGE_PATH_ENVS)})",
    )
    server.add_argument(
        "--video-retention-seconds",
        type=int,
        default=None,
        help="finished video jobs (record and file) expire this long after they finish "
        "(default: kept until deleted)",
    )
    server.add_argument(
        "--max-queued-video-jobs",
        type=int,
        default=DEFAULT_MAX_QUEUED_VIDEO_JOBS,
        help="accepted video jobs waiting in the store for the engine; beyond this, POST "
        "/v1/videos gets 503 with Retry-After",
    )
    server.add_argument(
        "--no-resume",
        dest="resume_video_jobs",
        action="store_false",
        help="after a restart, fail the video jobs that were running (code server_restarted) "
        "instead of running them again; queued jobs run either way",
    )
    add_store_arguments(server)
    server.add_argument(
        "--frame-interpolation-dir",
        type=Path,
        default=None,
        help="the directory whose subdirectories (each holding RIFE's flownet.pkl) video "
        "requests may name as frame_interpolation_model_path; its own flownet.pkl, if any, is "
        "the default (without it, only the built-in omni-tiny-rife is taken)",
    )
    server.add_argument("--access-log", action="store_true", help="log one line per request")
    server.add_argument(
        "--no-playground",
        dest="playground",
        action="store_false",
        help="do not serve the playground page at / and /playground",
    )
    server.add_argument(
        "--keepalive-timeout",
        type=float,
        default=DEFAULT_KEEPALIVE_TIMEOUT_S,
        help="seconds a connection may wait for a whole request head, after it opens or after "
        "its last answer (idle keep-alive, slowloris)",
    )
    server.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_S,
        help="seconds a request body may take to arrive after its head (else 408)",
    )
    server.add_argument(
        "--send-timeout",
        type=float,
        default=DEFAULT_SEND_TIMEOUT_S,
        help="seconds a client may read nothing of an answer before it is disconnected",
    )
    server.add_argument(
        "--shutdown-timeout",
        type=float,
        default=DEFAULT_SHUTDOWN_TIMEOUT_S,
        help="after SIGTERM, seconds that requests and video jobs in flight may take to finish "
        "(new ones get 503); queued video jobs stay queued for the next start",
    )
    cluster = parser.add_argument_group(
        "replicas (needs the cluster extra: pip install omni[cluster])"
    )
    cluster.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        help="engine replicas, each with its own GPU (a CPU share without GPUs), run as a Ray "
        "Serve deployment behind this server; more than 1 starts a local Ray cluster unless "
        "--ray-address joins one",
    )
    cluster.add_argument(
        "--ray-address",
        default=None,
        help="join this Ray cluster (auto: the one started on this node with `ray start`, or "
        "HOST:PORT) and run the replicas on it",
    )
    cluster.add_argument(
        "--api-server-count",
        type=int,
        default=1,
        help="HTTP front-end processes sharing --port (SO_REUSEPORT, Linux), all sending to "
        f"the same replicas; more than 1 needs --data-parallel-size or --ray-address (at most "
        f"{MAX_API_SERVER_COUNT})",
    )
    return parser


def add_store_arguments(group: argparse._ArgumentGroup) -> None:
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


def default_storage_path() -> Path:
    for name in STORAGE_PATH_ENVS:
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    return DEFAULT_STORAGE_PATH
