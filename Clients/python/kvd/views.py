"""Query results: per (layer, KV head) views of K, V, positions and log-weights.

Shapes: ``keys``/``values`` are ``[num_tokens, head_dim]`` in the model's dtype; ``positions`` is
``[num_tokens]`` int32 (original token positions, ascending); ``log_weights`` is ``[num_tokens]``
float32 (add to the attention logits). Views into shared memory are valid while the sequence's
generation is the one returned with them; pass ``copy=True`` to ``Client.query`` to detach.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np


class HeadData:
    """What one (layer, KV head) of a sequence holds.

    ``key_pages`` / ``value_pages``: list of ``[count, head_dim]`` arrays, one per page run, in
    token order (PAGES mode: zero-copy views into the arena; other modes: a single entry). ``None``
    in METADATA mode.
    """

    __slots__ = ("layer", "head", "num_tokens", "head_dim", "dtype", "positions", "log_weights",
                 "key_pages", "value_pages", "_keys", "_values")

    def __init__(self, layer: int, head: int, num_tokens: int, head_dim: int, dtype: np.dtype,
                 positions: np.ndarray, log_weights: np.ndarray,
                 key_pages: Optional[List[np.ndarray]], value_pages: Optional[List[np.ndarray]]):
        self.layer = layer
        self.head = head
        self.num_tokens = num_tokens
        self.head_dim = head_dim
        self.dtype = dtype
        self.positions = positions
        self.log_weights = log_weights
        self.key_pages = key_pages
        self.value_pages = value_pages
        self._keys = None
        self._values = None

    def _joined(self, pages: Optional[List[np.ndarray]]) -> Optional[np.ndarray]:
        # One run (or none) can be returned as it is, so a head inside one page stays a true view;
        # several page runs are not contiguous in the arena and must be concatenated (a copy).
        if pages is None:
            return None
        if not pages:
            return np.empty((0, self.head_dim), dtype=self.dtype)
        if len(pages) == 1:
            return pages[0]
        return np.concatenate(pages, axis=0)

    @property
    def keys(self) -> Optional[np.ndarray]:
        """``[num_tokens, head_dim]`` keys (a view when they are contiguous, else a copy)."""
        if self._keys is None:
            self._keys = self._joined(self.key_pages)
        return self._keys

    @property
    def values(self) -> Optional[np.ndarray]:
        """``[num_tokens, head_dim]`` values (a view when they are contiguous, else a copy)."""
        if self._values is None:
            self._values = self._joined(self.value_pages)
        return self._values

    @property
    def is_view(self) -> bool:
        """True when ``keys``/``values`` are views (no copy was needed)."""
        return self.key_pages is not None and len(self.key_pages) <= 1

    def copy(self) -> "HeadData":
        """A detached copy: every array owns its memory (safe after the generation changes)."""
        cp = lambda a: None if a is None else np.array(a, copy=True)
        keys, values = cp(self.keys), cp(self.values)
        return HeadData(self.layer, self.head, self.num_tokens, self.head_dim, self.dtype,
                        cp(self.positions), cp(self.log_weights),
                        None if keys is None else [keys], None if values is None else [values])

    def __repr__(self) -> str:
        runs = "-" if self.key_pages is None else len(self.key_pages)
        return (f"HeadData(layer={self.layer}, head={self.head}, num_tokens={self.num_tokens}, "
                f"runs={runs})")


class QueryResult:
    """One sequence as returned by ``Client.query``.

    Index with ``result[layer, head]``; iterate for the heads in layer-major order.
    """

    def __init__(self, sequence_id: int, generation: int, length: int, dtype: np.dtype,
                 head_dim: int, mode: str, heads: List[HeadData]):
        self.sequence_id = sequence_id
        self.generation = generation
        self.length = length
        self.dtype = dtype
        self.head_dim = head_dim
        self.mode = mode
        self.heads = heads
        self._by_key: Dict[Tuple[int, int], HeadData] = {(h.layer, h.head): h for h in heads}

    def __getitem__(self, key: Tuple[int, int]) -> HeadData:
        return self._by_key[tuple(key)]

    def __iter__(self) -> Iterator[HeadData]:
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)

    @property
    def layers(self) -> List[int]:
        """Layers present, ascending."""
        return sorted({h.layer for h in self.heads})

    def stacked(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(K, V)``, each ``[layers, kv_heads, tokens, head_dim]`` (a copy).

        Layers are those returned (ascending); requires every head to hold the same token count.
        """
        if any(h.key_pages is None for h in self.heads):
            raise ValueError("stacked() needs K/V; this query was METADATA mode")
        counts = {h.num_tokens for h in self.heads}
        if len(counts) > 1:
            raise ValueError(f"stacked() needs equal token counts per head, got {sorted(counts)}")
        layers = self.layers
        kv_heads = sorted({h.head for h in self.heads})
        if len(self.heads) != len(layers) * len(kv_heads):
            raise ValueError("stacked() needs every head of every returned layer")
        tokens = counts.pop() if counts else 0
        shape = (len(layers), len(kv_heads), tokens, self.head_dim)
        k = np.empty(shape, dtype=self.dtype)
        v = np.empty(shape, dtype=self.dtype)
        for h in self.heads:
            li, hi = layers.index(h.layer), kv_heads.index(h.head)
            k[li, hi] = h.keys
            v[li, hi] = h.values
        return k, v

    def __repr__(self) -> str:
        return (f"QueryResult(sequence_id={self.sequence_id}, generation={self.generation}, "
                f"length={self.length}, mode={self.mode!r}, heads={len(self.heads)})")
