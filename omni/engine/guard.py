"""Running a stage's work so that a fault stays with the requests it was for: an exception fails
only those requests, and running out of memory drops their step caches, then halves the batch
and retries, before anyone is failed."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from omni.request import Request

logger = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_guarded(
    stage: Callable[[list[Request]], None], requests: list[Request], failed: dict[str, str]
) -> None:
    """Run a stage; a fault fails only these requests, and out-of-memory halves and retries."""
    if not requests:
        return
    try:
        stage(requests)
    except Exception as exc:
        if is_out_of_memory(exc) and drop_step_caches(requests):
            logger.warning(
                "out of memory on %d requests: dropping their step caches", len(requests)
            )
            empty_device_cache()
            run_guarded(stage, requests, failed)
            return
        if is_out_of_memory(exc) and len(requests) > 1:
            logger.warning("out of memory on %d requests: splitting", len(requests))
            empty_device_cache()
            half = len(requests) // 2
            run_guarded(stage, requests[:half], failed)
            run_guarded(stage, requests[half:], failed)
            return
        logger.exception("%s failed for %d request(s)", stage.__name__, len(requests))
        message = f"{type(exc).__name__}: {exc}"
        for request in requests:
            failed[request.request_id] = message


def drop_step_caches(requests: list[Request]) -> bool:
    """Forget the requests' step caches (they start again cold); whether any memory was held.

    Also what keeps a retried step correct: an interrupted step may have refreshed some caches.
    """
    held = any(r.cache is not None and r.cache.nbytes for r in requests)
    for request in requests:
        if request.cache is not None:
            request.cache.forget()
    return held
