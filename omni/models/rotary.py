"""Rotary tables made once per token layout instead of at every forward.

FLUX's transformers rebuild their rotary table (cos and sin for every text and image position)
from the position ids on each call, and a padded forward of mixed sizes needs one more table per
size. The positions of a row depend only on its layout (text length, image grid, reference
tokens), which stays the same for all the steps of all requests of that size, so the tables are
kept here, least recently used out first, and the transformer's own `pos_embed` call is answered
from them while a forward runs.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

import torch

from omni.models.tensor_lru import TensorLru

Table = tuple[torch.Tensor, ...]  # what the transformer's pos_embed returns: cos, sin
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # FLUX.1 at 1024x1024: 4.7 MB a layout in float32


class RotaryTables:
    def __init__(self, pos_embed: torch.nn.Module, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.pos_embed = pos_embed
        self.tables = TensorLru(max_bytes)

    @property
    def num_bytes(self) -> int:
        return self.tables.num_bytes

    def get(self, layout: Hashable, ids: Callable[[], torch.Tensor]) -> Table:
        """The table of `layout`, made from `ids()` (the joint text + image position ids the
        transformer would build for it) the first time."""
        table = self.tables.get(layout)
        if table is None:
            table = tuple(self.pos_embed(ids()))
            self.tables.put(layout, table)
        return table

    @contextmanager
    def answering(self, table: Table) -> Iterator[None]:
        """Inside the block the transformer's `pos_embed(ids)` returns `table` without
        computing it: the caller passes the ids whose table this is."""
        module = self.pos_embed
        shadowed = module.__dict__.get("forward")  # a hook's wrapper, if one is installed
        module.forward = lambda ids: table
        try:
            yield
        finally:
            if shadowed is None:
                del module.forward
            else:
                module.forward = shadowed
