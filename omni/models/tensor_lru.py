"""Tensors kept least recently used out first, within a bound on their bytes: what the text
embedding cache and the rotary tables share."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch

Tensors = tuple[torch.Tensor, ...]


def nbytes(tensors: Tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class TensorLru:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self._entries: OrderedDict[Hashable, Tensors] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable) -> Tensors | None:
        """The entry, now the most recently used; None when it is not kept."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: Tensors) -> None:
        """Keep `entry`, evicting the least recently used past the bound; an entry larger than
        the whole bound is not kept."""
        size = nbytes(entry)
        if size > self.max_bytes:
            return
        replaced = self._entries.pop(key, None)
        if replaced is not None:  # a key put again counts once, at its new size
            self.num_bytes -= nbytes(replaced)
        self._entries[key] = entry
        self.num_bytes += size
        while self.num_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.num_bytes -= nbytes(evicted)
