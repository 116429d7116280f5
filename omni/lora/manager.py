"""Adapters held on the device: loaded on first use, least recently used evicted past --max-loras.

`acquire` reads and converts adapter files on the caller's thread (the HTTP side runs it in a
worker thread before submitting), never on the engine thread, so loading never holds up a step.
An adapter a live request holds is pinned: it is not evicted until the request lets it go.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from omni.errors import EngineOverloadedError, InvalidRequestError
from omni.lora.rows import RowStack, install_hooks
from omni.lora.sources import LoraSources, file_identity
from omni.lora.spec import LoraSpec
from omni.lora.weights import LoraWeights, read_lora

if TYPE_CHECKING:
    from omni.config import EngineConfig
    from omni.models.base import FamilyAdapter

logger = logging.getLogger(__name__)


def lora_manager(adapter: FamilyAdapter, config: EngineConfig) -> LoraManager | None:
    """The loaded model's adapter store when the server enables LoRA; None otherwise."""
    if not config.lora_enabled:
        return None
    if not adapter.supports_lora:
        raise ValueError(f"LoRA (--lora-modules, --lora-dir) is not wired for {adapter.name}")
    pipeline_class, transformer = adapter.lora_target()
    manager = LoraManager(
        LoraSources.of(config.lora_modules, config.lora_dir),
        pipeline_class,
        transformer,
        config.max_loras,
        config.max_lora_rank,
    )
    for name, _ in config.lora_modules:  # a registered adapter that cannot load stops the start
        manager.release(manager.acquire([LoraSpec(name=name)]))
    return manager


class LoraManager:
    def __init__(
        self,
        sources: LoraSources,
        pipeline_class: type,
        transformer: torch.nn.Module,
        max_loras: int,
        max_rank: int,
    ) -> None:
        if not hasattr(pipeline_class, "lora_state_dict"):
            raise ValueError(f"{pipeline_class.__name__} has no LoRA loader in diffusers")
        self.sources = sources
        self.pipeline_class = pipeline_class
        self.transformer = transformer
        self.max_loras = max_loras
        self.max_rank = max_rank
        self._loaded: collections.OrderedDict[Any, LoraWeights] = collections.OrderedDict()
        self._pins: collections.Counter[Any] = collections.Counter()
        self._lock = threading.Lock()
        self._hooks = install_hooks(transformer)

    def check(self, specs: Sequence[LoraSpec]) -> None:
        """Refuse, without reading a file, adapters a request may not name (InvalidRequestError)."""
        for spec in specs:
            self.sources.path_of(spec)
        if len(specs) > self.max_loras:
            raise InvalidRequestError(
                f"lora stacks {len(specs)} adapters, more than this server holds at once "
                f"(--max-loras {self.max_loras})",
                param="lora",
            )

    def acquire(self, specs: Sequence[LoraSpec]) -> RowStack:
        """The adapters, loaded and pinned; release them with `release` when the request ends."""
        self.check(specs)
        stack: list[tuple[LoraWeights, float]] = []
        try:
            for spec in specs:
                stack.append((self._pinned(spec), float(spec.scale)))
        except BaseException:
            self.release(tuple(stack))
            raise
        return tuple(stack)

    def release(self, stack: RowStack) -> None:
        with self._lock:
            for weights, _ in stack:
                self._pins[weights.identity] -= 1
                if self._pins[weights.identity] <= 0:
                    del self._pins[weights.identity]
            self._evict()

    @property
    def num_loaded(self) -> int:
        return len(self._loaded)

    def _pinned(self, spec: LoraSpec) -> LoraWeights:
        path = self.sources.path_of(spec)
        identity = file_identity(path)
        with self._lock:
            weights = self._hold(identity)
        if weights is not None:
            return weights
        label = spec.name or spec.local_path or str(path)
        loaded = read_lora(
            path, label, self.pipeline_class, self.transformer, self.max_rank, identity
        )
        with self._lock:
            weights = self._hold(identity)  # another request may have loaded it meanwhile
            if weights is not None:
                return weights
            self._evict(room_for=1)
            if len(self._loaded) >= self.max_loras:
                raise EngineOverloadedError(
                    f"all {self.max_loras} LoRA slots (--max-loras) hold adapters of running "
                    "requests; retry when one finishes"
                )
            self._loaded[identity] = loaded
            self._pins[identity] += 1
        logger.info(
            "loaded LoRA %s: rank %d, %d layers, %.1f MiB",
            label,
            loaded.rank,
            len(loaded.layers),
            loaded.nbytes / 2**20,
        )
        return loaded

    def _hold(self, identity: Any) -> LoraWeights | None:
        weights = self._loaded.get(identity)
        if weights is not None:
            self._loaded.move_to_end(identity)
            self._pins[identity] += 1
        return weights

    def _evict(self, room_for: int = 0) -> None:
        """Drop the least recently used unpinned adapters until `room_for` more fit."""
        for identity in list(self._loaded):
            if len(self._loaded) + room_for <= self.max_loras:
                return
            if self._pins[identity] == 0:
                del self._loaded[identity]
