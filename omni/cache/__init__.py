"""Step caching decided per request: what a request asked for, and the state it keeps.

A request's cache lives on the request, one row state per branch (conditional or unconditional
row) and per denoiser (Wan2.2's experts cache apart): a `RowCache` for First-Block Cache, a
`TaylorRow` for TaylorSeer. Like its latents and its sampler's history, it is dropped when the
request leaves the engine.
"""

from omni.cache.first_block import RowCache, RowFirstBlockCache
from omni.cache.rows import STEP_CACHES, cached_forward, step_cache_problem
from omni.cache.state import RequestCache, check_cache
from omni.cache.taylorseer import RowTaylorSeer, TaylorRow, taylorseer_problem
from omni.limits import CACHE_TYPES

__all__ = [
    "CACHE_TYPES",
    "STEP_CACHES",
    "RequestCache",
    "RowCache",
    "RowFirstBlockCache",
    "RowTaylorSeer",
    "TaylorRow",
    "cached_forward",
    "check_cache",
    "step_cache_problem",
    "taylorseer_problem",
]
