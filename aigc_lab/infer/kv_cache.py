"""A key/value cache that appends in place: transformers' ``DynamicCache`` with room reserved up front.

``DynamicLayer.update`` appends each new token's keys and values with ``torch.cat``, which copies the
whole cache of that layer at every step: O(n^2) bytes over a generation, a cost that grows with every
token (figures in benchmarks/RESULTS.md). The engine knows the final length (prompt + ``max_new_tokens``),
so ``ReservedLayer`` allocates it once and writes each step into place; attention reads a view of the
filled part. The values, and so the tokens, are exactly those of ``DynamicCache``.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class ReservedLayer(DynamicLayer):
        """A ``DynamicLayer`` whose keys/values are views of buffers with ``capacity`` positions.

        ``storage`` gives the whole buffers (for a step decoder that writes the next position itself, then says
        so with ``advance``); ``reserve`` grows them. Everything else sees a plain ``DynamicLayer``."""

        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self._k: Any = None
            self._v: Any = None

        @property
        def storage(self) -> tuple[Any, Any] | None:
            """The key and value buffers, every reserved position (None before the first update)."""
            return None if self._k is None else (self._k, self._v)

        def reserve(self, capacity: int) -> None:
            """Make room for ``capacity`` positions (new buffers, the filled part copied); no-op if there is."""
            if self._k is None or self._k.shape[-2] >= capacity:
                self.capacity = max(self.capacity, capacity)
                return
            cur = self.get_seq_length()
            k = self._k.new_empty((*self._k.shape[:-2], capacity, self._k.shape[-1]))
            v = self._v.new_empty((*self._v.shape[:-2], capacity, self._v.shape[-1]))
            k[..., :cur, :].copy_(self._k[..., :cur, :])
            v[..., :cur, :].copy_(self._v[..., :cur, :])
            self._k, self._v, self.capacity = k, v, capacity
            self.keys, self.values = k[..., :cur, :], v[..., :cur, :]

        def advance(self, n: int = 1) -> None:
            """``n`` more positions of ``storage`` were written in place (by a step decoder): show them."""
            end = self.get_seq_length() + n
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]

        def rewind(self, n: int) -> None:
            """Forget the last ``n`` positions (speculative decoding's rejected draft tokens)."""
            end = self.get_seq_length() - n
            self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            import torch

            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            cur, n = self.get_seq_length(), key_states.shape[-2]
            k = self._k
            if (k is None or self.keys.data_ptr() != k.data_ptr() or cur + n > k.shape[-2]
                    or k.shape[:-2] != key_states.shape[:-2] or k.shape[-1] != key_states.shape[-1]
                    or self._v.shape[-1] != value_states.shape[-1]):
                # first call, or the cache was replaced (reordered, cropped to a copy) or is full: (re)allocate
                cap = max(self.capacity, 2 * (cur + n))
                self._k = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
                self._v = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
                if cur:
                    self._k[..., :cur, :].copy_(self.keys)
                    self._v[..., :cur, :].copy_(self.values)
            with torch.no_grad():
                self._k[..., cur:cur + n, :].copy_(key_states)
                self._v[..., cur:cur + n, :].copy_(value_states)
            self.keys = self._k[..., :cur + n, :]
            self.values = self._v[..., :cur + n, :]
            return self.keys, self.values

    return ReservedLayer


def is_reserved(layer: Any) -> bool:
    """Whether ``layer`` is one of ``reserved_cache``'s layers (appends in place)."""
    return type(layer) is _layer_class()


def all_reserved(cache: Any) -> bool:
    """Whether every layer of ``cache`` is reserved (what the step decoders need)."""
    return cache is not None and bool(cache.layers) and all(is_reserved(layer) for layer in cache.layers)


def reserved_cache(model: Any, capacity: int) -> Any | None:
    """A ``DynamicCache`` for ``model`` whose full-attention layers reserve ``capacity`` positions, or None
    where the model does not use transformers' cache classes (the engine then lets the model make its own)."""
    try:
        from transformers import PreTrainedModel
        from transformers.cache_utils import DynamicCache, DynamicLayer
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    if not isinstance(model, PreTrainedModel) or model.config.is_encoder_decoder:
        return None
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - configs this transformers cannot map to cache layers
        return None
    if not cache.layers:
        return None
    reserved = _layer_class()
    cache.layers = [reserved(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
