"""The flags of `python -m omni.serve`. Each sets the config field of its name (EngineConfig or
ServerConfig), and every field but the internal `front_end_index` has one. The engine's groups
are here; the HTTP server's, the video job stores' and the replicas' in omni.flags_server."""

from __future__ import annotations

import argparse

from omni.config import ATTENTION_BACKENDS, CFG_PARALLEL_SIZES, DTYPES, EngineConfig
from omni.flags_server import (
    add_http_arguments,
    add_replica_arguments,
    add_server_arguments,
    add_video_job_arguments,
)
from omni.limits import CACHE_TYPES, DEFAULT_CACHE_THRESHOLDS, MAX_LORA_SCALE
from omni.scheduler import POLICIES

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
    # The order of the calls is the order of --help (and of its usage line).
    model = parser.add_argument_group("model and engine")
    add_model_arguments(model)
    add_scheduling_arguments(parser.add_argument_group("scheduling"))
    add_engine_arguments(model)
    add_lora_arguments(parser.add_argument_group("LoRA"))
    server = parser.add_argument_group("HTTP server")
    add_server_arguments(server)
    add_video_job_arguments(server)
    add_http_arguments(server)
    add_replica_arguments(
        parser.add_argument_group("replicas (needs the cluster extra: pip install omni[cluster])")
    )
    return parser


def add_model_arguments(group: argparse._ArgumentGroup) -> None:
    """Which model, on which device, in which precision."""
    group.add_argument(
        "--model",
        default="omni-tiny",
        help="a built-in model (omni-tiny, omni-tiny-video), a local diffusers directory, "
        "or a hub id already in the local Hugging Face cache",
    )
    group.add_argument(
        "--served-model-name", default=None, help="the name clients use (default: --model)"
    )
    group.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    group.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])


def add_scheduling_arguments(group: argparse._ArgumentGroup) -> None:
    """The scheduler's budgets, caps and order."""
    group.add_argument(
        "--max-num-batched-tokens",
        type=positive_or_auto,
        default="auto",
        help="one forward's budget: rows x padded sequence length, CFG rows included; auto "
        "is the knee of a short profile of the model at start-up (logged, and in /v1/stats)",
    )
    group.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULTS.max_batch_size,
        help="hard cap on rows in one forward (real CFG takes two)",
    )
    group.add_argument(
        "--max-num-running",
        type=int,
        default=DEFAULTS.max_num_running,
        help="requests holding latents at once",
    )
    group.add_argument(
        "--max-num-waiting",
        type=int,
        default=DEFAULTS.max_num_waiting,
        help="queued requests; beyond this, requests get 503 with Retry-After",
    )
    group.add_argument(
        "--scheduling-policy",
        choices=list(POLICIES),
        default=DEFAULTS.scheduling_policy,
        help="fcfs: arrival order; priority: the request field `priority`, lower first; "
        "shortest: fewest remaining steps first",
    )
    group.add_argument(
        "--max-starvation-steps",
        type=int,
        default=DEFAULTS.max_starvation_steps,
        help="a request not run for this many engine steps goes ahead of every other",
    )
    group.add_argument(
        "--no-overlap-stages",
        dest="overlap_stages",
        action="store_false",
        help="encode and decode inside the engine step instead of on a worker thread",
    )
    group.add_argument(
        "--profile-seconds",
        type=float,
        default=DEFAULTS.profile_seconds,
        help="time limit of the start-up profile that sets --max-num-batched-tokens auto",
    )


def add_engine_arguments(group: argparse._ArgumentGroup) -> None:
    """How the engine runs a forward: parallelism, attention, step caching, limits."""
    group.add_argument(
        "--cfg-parallel-size",
        type=int,
        default=DEFAULTS.cfg_parallel_size,
        choices=list(CFG_PARALLEL_SIZES),
    )
    group.add_argument("--attention-backend", default="auto", choices=ATTENTION_BACKENDS)
    group.add_argument(
        "--cache",
        choices=CACHE_TYPES,
        default=DEFAULTS.cache,
        help="step caching for requests that do not choose: fbcache (First-Block Cache, decided "
        "per request and row), taylorseer (TaylorSeer, diffusers' schedule, per request) or none",
    )
    group.add_argument(
        "--cache-threshold",
        type=float,
        default=None,
        help=f"the --cache fbcache threshold (default {DEFAULT_CACHE_THRESHOLDS['fbcache']:g}; "
        "taylorseer takes none); a request's `cache` field may set its own",
    )
    group.add_argument(
        "--max-output-pixels",
        type=int,
        default=None,
        help="most width x height x frames one image or video may have (default: the model's "
        "own limits)",
    )


def add_lora_arguments(group: argparse._ArgumentGroup) -> None:
    """The adapters requests may name, and how many stay loaded."""
    group.add_argument(
        "--lora-modules",
        type=lora_module,
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="adapters requests may name in their `lora` field (a LoRA .safetensors file, or a "
        "directory holding pytorch_lora_weights.safetensors)",
    )
    group.add_argument(
        "--lora-dir",
        default=None,
        help="a request's lora local_path is accepted only inside this directory (after "
        "resolving symlinks and ..); without it only --lora-modules names are accepted",
    )
    group.add_argument(
        "--max-loras",
        type=int,
        default=DEFAULTS.max_loras,
        help="adapters held on the device at once; the least recently used is evicted",
    )
    group.add_argument(
        "--max-lora-rank",
        type=int,
        default=DEFAULTS.max_lora_rank,
        help=f"adapters of a higher rank are refused (scales are bounded by ±{MAX_LORA_SCALE:g})",
    )
