"""The text-embedding cache: repeated texts are encoded once, within its bound on bytes; the
LRU under it counts a key put again once."""

from __future__ import annotations

import torch

from omni.models.tensor_lru import TensorLru
from omni.models.text_cache import TextEmbeddingCache


class Encoder:
    """Each text's row is its length, 4 float32 values (16 bytes); counts the texts encoded."""

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor]:
        self.encoded += texts
        return (torch.tensor([[float(len(t))] * 4 for t in texts]),)


def test_repeated_texts_are_encoded_once_and_in_one_call():
    encoder = Encoder()
    cache = TextEmbeddingCache(encoder, max_bytes=1024)
    first = cache(["a cat", "", "a cat"])
    assert encoder.encoded == ["a cat", ""]
    second = cache(["", "a dog", "a cat"])
    assert encoder.encoded == ["a cat", "", "a dog"]
    assert torch.equal(second[2][0], first[0][0]) and second[0][0].shape == (1, 4)
    assert (cache.hits, cache.misses) == (3, 3)


def test_past_its_bound_the_least_recently_used_text_is_encoded_again():
    encoder = Encoder()
    cache = TextEmbeddingCache(encoder, max_bytes=2 * 16)  # two texts
    cache(["a"])
    cache(["bb"])
    cache(["a"])  # "bb" is now the least recently used
    cache(["ccc"])
    cache(["a"])
    assert encoder.encoded == ["a", "bb", "ccc"]
    cache(["bb"])
    assert encoder.encoded == ["a", "bb", "ccc", "bb"]


def test_a_key_put_again_is_counted_once_at_its_new_size():
    lru = TensorLru(max_bytes=3 * 16)
    lru.put("a", (torch.zeros(4),))
    lru.put("b", (torch.zeros(4),))
    lru.put("a", (torch.zeros(8),))  # 32 bytes in place of 16: 48 in all, within the bound

    assert lru.num_bytes == 48
    assert "a" in lru and "b" in lru
    assert lru.get("a")[0].shape == (8,)
