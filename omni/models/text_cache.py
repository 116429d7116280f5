"""An LRU cache of text embeddings, so repeated prompts (and the negative prompt most requests
share) are encoded once. One cache per loaded model, so its key is the text alone."""

from __future__ import annotations

from collections.abc import Callable

import torch

from omni.models.tensor_lru import TensorLru

Embedding = tuple[torch.Tensor, ...]  # one text's tensors, each with a batch dimension of 1
DEFAULT_MAX_BYTES = 256 * 1024 * 1024  # FLUX.1's T5 output is 4 MiB a prompt in bfloat16


class TextEmbeddingCache:
    def __init__(
        self, encode: Callable[[list[str]], Embedding], max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        """`encode` takes texts and returns batched tensors, row i belonging to text i."""
        self.encode = encode
        self.entries = TensorLru(max_bytes)
        self.hits = 0
        self.misses = 0

    def __call__(self, texts: list[str]) -> list[Embedding]:
        """Each text's embedding; the texts not cached are encoded together in one call."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.entries]
        fresh: dict[str, Embedding] = {}
        if missing:
            batched = self.encode(missing)
            for index, text in enumerate(missing):
                fresh[text] = tuple(t[index : index + 1].clone() for t in batched)
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        found = [fresh[t] if t in fresh else self.entries.get(t) for t in texts]
        for text, embedding in fresh.items():
            self.entries.put(text, embedding)
        return found
