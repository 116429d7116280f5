"""An LRU cache of text embeddings, so repeated prompts (and the negative prompt most requests
share) are encoded once. One cache per loaded model, so its key is the text alone."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

Embedding = tuple[torch.Tensor, ...]  # one text's tensors, each with a batch dimension of 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # FLUX.1's T5 output is 4 MiB a prompt in bfloat16


class TextEmbeddingCache:
    def __init__(
        self, encode: Callable[[list[str]], Embedding], max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """`encode` takes texts and returns batched tensors, row i belonging to text i."""
        self.encode = encode
        self.max_bytes = max_bytes
        self.num_bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, Embedding] = OrderedDict()

    def __call__(self, texts: list[str]) -> list[Embedding]:
        """Each text's embedding; the texts not cached are encoded together in one call."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._entries]
        fresh: dict[str, Embedding] = {}
        if missing:
            batched = self.encode(missing)
            for index, text in enumerate(missing):
                fresh[text] = tuple(t[index : index + 1].clone() for t in batched)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        found = [fresh[t] if t in fresh else self._touch(t) for t in texts]
        for text, embedding in fresh.items():
            self._store(text, embedding)
        return found

    def _touch(self, text: str) -> Embedding:
        self._entries.move_to_end(text)
        return self._entries[text]

    def _store(self, text: str, embedding: Embedding) -> None:
        size = sum(t.numel() * t.element_size() for t in embedding)
        if size > self.max_bytes:
            return
        self._entries[text] = embedding
        self.num_bytes += size
        while self.num_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.num_bytes -= sum(t.numel() * t.element_size() for t in evicted)
