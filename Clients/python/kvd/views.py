"""Query results: per (layer, KV head) views of K, V, positions and log-weights.

Shapes: ``keys``/``values`` are ``[num_tokens, head_dim]`` in the model's dtype; ``positions`` is
``[num_tokens]`` int32 (original token positions, ascending); ``log_weights`` is ``[num_tokens]``
float32 (add to the attention logits). Views into shared memory are valid while the sequence's
generation is the one returned with them; pass ``copy=True`` to ``Client.query`` to detach.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from kvd import paging
from kvd.errors import ErrorCode, KvdError


class PagedHead:
    """The pages of one (layer, KV head) as a PAGES-mode query returned them: tokens packed from
    slot 0 of the first page, ``page_tokens`` per page, so page ids and the count say where every
    token is. ``joined`` reads the head with one batched copy; ``views`` gives one zero-copy view
    per page."""

    __slots__ = ("arena", "page_ids", "num_tokens", "head_dim", "dtype", "page_tokens")

    def __init__(self, arena: Any, page_ids: np.ndarray, num_tokens: int, head_dim: int,
                 dtype: np.dtype, page_tokens: int):
        if len(page_ids) != paging.pages_needed(0, num_tokens, max(page_tokens, 1)):
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: {len(page_ids)} pages for {num_tokens} tokens of {page_tokens} "
                           "per page")
        self.arena = arena
        self.page_ids = page_ids
        self.num_tokens = num_tokens
        self.head_dim = head_dim
        self.dtype = np.dtype(dtype)
        self.page_tokens = page_tokens

    def views(self, values: bool) -> List[np.ndarray]:
        """One read-only ``[count, head_dim]`` view per page, in token order."""
        info = self.arena.info
        block = self.page_tokens * self.head_dim * self.dtype.itemsize if values else 0
        out = []
        left = self.num_tokens
        for p in self.page_ids:
            c = min(left, self.page_tokens)
            out.append(self.arena.array(info.pages_offset + int(p) * info.page_bytes + block,
                                        c * self.head_dim, self.dtype, (c, self.head_dim)))
            left -= c
        return out

    def joined(self, values: bool) -> np.ndarray:
        """``[num_tokens, head_dim]``: a view when the head fits one page, else one copy."""
        if len(self.page_ids) <= 1:
            pages = self.views(values)
            return pages[0] if pages else np.empty((0, self.head_dim), dtype=self.dtype)
        return paging.read_tokens(self.arena.pages, self.page_ids[None, :], self.num_tokens,
                                  self.head_dim, self.dtype, self.page_tokens, values)[0]


# Where a head's K (or V) is: page runs as arrays, a PagedHead (PAGES mode), or None (METADATA).
PageSource = Union[None, List[np.ndarray], PagedHead]


class HeadData:
    """What one (layer, KV head) of a sequence holds.

    ``key_pages`` / ``value_pages``: list of ``[count, head_dim]`` arrays, one per page run, in
    token order (PAGES mode: zero-copy views into the arena; other modes: a single entry). ``None``
    in METADATA mode.
    """

    __slots__ = ("layer", "head", "num_tokens", "head_dim", "dtype", "positions", "log_weights",
                 "_kp", "_vp", "_keys", "_values", "aliased", "owner_layer")

    def __init__(self, layer: int, head: int, num_tokens: int, head_dim: int, dtype: np.dtype,
                 positions: np.ndarray, log_weights: np.ndarray,
                 key_pages: "PageSource", value_pages: "PageSource", aliased: bool = False,
                 owner_layer: Optional[int] = None):
        # key_pages / value_pages: a list of arrays, a PagedHead (PAGES mode), or None (METADATA).
        self.layer = layer
        self.head = head
        self.num_tokens = num_tokens
        self.head_dim = head_dim
        self.dtype = dtype
        self.positions = positions
        self.log_weights = log_weights
        self._kp = key_pages
        self._vp = value_pages
        self._keys: Optional[np.ndarray] = None
        self._values: Optional[np.ndarray] = None
        # KVSharer: an aliased layer reads `owner_layer`'s cache; its data here is the owner's.
        self.aliased = aliased
        self.owner_layer = layer if owner_layer is None else owner_layer

    @staticmethod
    def _pages(source: "PageSource", values: bool) -> Optional[List[np.ndarray]]:
        return source.views(values) if isinstance(source, PagedHead) else source

    @property
    def key_pages(self) -> Optional[List[np.ndarray]]:
        """Per-page-run ``[count, head_dim]`` keys (zero-copy views in PAGES mode)."""
        return self._pages(self._kp, False)

    @property
    def value_pages(self) -> Optional[List[np.ndarray]]:
        """Per-page-run ``[count, head_dim]`` values (zero-copy views in PAGES mode)."""
        return self._pages(self._vp, True)

    def _joined(self, source: "PageSource", values: bool) -> Optional[np.ndarray]:
        # One run (or none) can be returned as it is, so a head inside one page stays a true view;
        # several page runs are not contiguous in the arena and must be concatenated (a copy).
        if source is None:
            return None
        if isinstance(source, PagedHead):
            return source.joined(values)
        if not source:
            return np.empty((0, self.head_dim), dtype=self.dtype)
        if len(source) == 1:
            return source[0]
        return np.concatenate(source, axis=0)

    @property
    def keys(self) -> Optional[np.ndarray]:
        """``[num_tokens, head_dim]`` keys (a view when they are contiguous, else a copy)."""
        if self._keys is None:
            self._keys = self._joined(self._kp, False)
        return self._keys

    @property
    def values(self) -> Optional[np.ndarray]:
        """``[num_tokens, head_dim]`` values (a view when they are contiguous, else a copy)."""
        if self._values is None:
            self._values = self._joined(self._vp, True)
        return self._values

    @property
    def is_view(self) -> bool:
        """True when ``keys``/``values`` are views (no copy was needed)."""
        if isinstance(self._kp, PagedHead):
            return len(self._kp.page_ids) <= 1
        return self._kp is not None and len(self._kp) <= 1

    def copy(self) -> "HeadData":
        """A detached copy: every array owns its memory (safe after the generation changes)."""
        def cp(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else np.array(a, copy=True)

        keys, values = cp(self.keys), cp(self.values)
        # A KVSharer-aliased head stays marked as one (its data is its owner layer's).
        return HeadData(self.layer, self.head, self.num_tokens, self.head_dim, self.dtype,
                        np.array(self.positions, copy=True), np.array(self.log_weights, copy=True),
                        None if keys is None else [keys], None if values is None else [values],
                        aliased=self.aliased, owner_layer=self.owner_layer)

    def __repr__(self) -> str:
        pages = self.key_pages
        runs = "-" if pages is None else len(pages)
        return (f"HeadData(layer={self.layer}, head={self.head}, num_tokens={self.num_tokens}, "
                f"runs={runs})")


class QueryResult:
    """One sequence as returned by ``Client.query``.

    Index with ``result[layer, head]``; iterate for the heads in layer-major order.

    Heads are built lazily: ``Client.query`` hands over the parsed reply, and a head's
    :class:`HeadData` (its arrays, its page list) is made the first time it is touched, so a caller
    that reads three heads of ninety pays for three. ``raw`` is the ``kvd.v1.QueryResponse``.
    """

    __slots__ = ("sequence_id", "generation", "length", "dtype", "head_dim", "mode", "raw",
                 "_source", "_make", "_built", "_by_key")

    def __init__(self, sequence_id: int, generation: int, length: int, dtype: np.dtype,
                 head_dim: int, mode: str, heads: Optional[List[HeadData]] = None, *,
                 raw: Any = None, source: Optional[Sequence[Any]] = None,
                 make: Optional[Callable[[Any], HeadData]] = None):
        # Either ``heads`` (built already) or ``source`` (the reply's HeadView messages) and
        # ``make`` (HeadView -> HeadData), called once per head on first use.
        self.sequence_id = sequence_id
        self.generation = generation
        self.length = length
        self.dtype = dtype
        self.head_dim = head_dim
        self.mode = mode
        self.raw = raw
        if heads is not None:
            self._source: Sequence[Any] = heads
            self._built: List[Optional[HeadData]] = list(heads)
        else:
            if source is None or make is None:
                raise ValueError("QueryResult needs heads, or source and make")
            self._source = source
            self._built = [None] * len(source)
        self._make = make
        self._by_key: Optional[Dict[Tuple[int, int], int]] = None

    def _head(self, i: int) -> HeadData:
        h = self._built[i]
        if h is None:
            assert self._make is not None
            h = self._built[i] = self._make(self._source[i])
        return h

    @property
    def heads(self) -> List[HeadData]:
        """Every head, layer-major (builds the ones not touched yet)."""
        return [self._head(i) for i in range(len(self._built))]

    def __getitem__(self, key: Tuple[int, int]) -> HeadData:
        if self._by_key is None:
            # (layer, head) of each head, read from the reply without building any HeadData.
            self._by_key = {(int(h.layer), int(h.head)): i for i, h in enumerate(self._source)}
        layer, head = key
        return self._head(self._by_key[(layer, head)])

    def __iter__(self) -> Iterator[HeadData]:
        return (self._head(i) for i in range(len(self._built)))

    def __len__(self) -> int:
        return len(self._built)

    @property
    def layers(self) -> List[int]:
        """Layers present, ascending."""
        return sorted({int(h.layer) for h in self._source})

    def copy(self) -> "QueryResult":
        """A detached copy: every head built and copied (``HeadData.copy``)."""
        return QueryResult(self.sequence_id, self.generation, self.length, self.dtype,
                           self.head_dim, self.mode, [h.copy() for h in self], raw=self.raw)

    def stacked(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(K, V)``, each ``[layers, kv_heads, tokens, head_dim]`` (a copy).

        Layers are those returned (ascending); requires every head to hold the same token count.
        """
        heads = self.heads
        if any(h._kp is None for h in heads):
            raise ValueError("stacked() needs K/V; this query was METADATA mode")
        counts = {h.num_tokens for h in heads}
        if len(counts) > 1:
            raise ValueError(f"stacked() needs equal token counts per head, got {sorted(counts)}")
        layers = self.layers
        kv_heads = sorted({h.head for h in heads})
        if len(heads) != len(layers) * len(kv_heads):
            raise ValueError("stacked() needs every head of every returned layer")
        tokens = counts.pop() if counts else 0
        shape = (len(layers), len(kv_heads), tokens, self.head_dim)
        paged = [h._kp for h in heads if isinstance(h._kp, PagedHead)]
        if paged and len(paged) == len(heads) and tokens:
            # Every head is a page list of the same length: one batched copy for all of K, one for V.
            ids = np.stack([p.page_ids for p in paged])
            first = paged[0]
            order = np.argsort([layers.index(h.layer) * len(kv_heads) + kv_heads.index(h.head)
                                for h in heads], kind="stable")
            ids = ids[order]
            read = lambda values: paging.read_tokens(first.arena.pages, ids, tokens, self.head_dim,
                                                     self.dtype, first.page_tokens, values)
            return read(False).reshape(shape), read(True).reshape(shape)
        k = np.empty(shape, dtype=self.dtype)
        v = np.empty(shape, dtype=self.dtype)
        for h in heads:
            li, hi = layers.index(h.layer), kv_heads.index(h.head)
            k[li, hi] = h.keys
            v[li, hi] = h.values
        return k, v

    def __repr__(self) -> str:
        return (f"QueryResult(sequence_id={self.sequence_id}, generation={self.generation}, "
                f"length={self.length}, mode={self.mode!r}, heads={len(self)})")
