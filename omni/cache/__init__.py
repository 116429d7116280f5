"""Step caching decided per request: what a request asked for, and the state it keeps.

A request's cache lives on the request, one `RowCache` per branch (conditional or
unconditional row) and per denoiser (Wan2.2's experts cache apart), like its latents and its
sampler's history; it is dropped when the request leaves the engine.
"""

from omni.cache.first_block import RowCache, RowFirstBlockCache
from omni.cache.rows import cached_forward, step_cache_problem
from omni.cache.state import RequestCache, check_cache
from omni.limits import CACHE_TYPES

__all__ = [
    "CACHE_TYPES",
    "RequestCache",
    "RowCache",
    "RowFirstBlockCache",
    "cached_forward",
    "check_cache",
    "step_cache_problem",
]
