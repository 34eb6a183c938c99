"""Where a head's tokens sit in the arena's pages, and batched reads and writes of them.

kvd fills a head's pages in token order: the first token of a reservation goes to ``first_slot``
of the first page, then that page fills up, then each next page from slot 0. A page holds
``page_tokens`` (P) tokens: the K block ``[P, head_dim]`` then the V block ``[P, head_dim]``.
A query's heads always start at slot 0 (kvd packs them to the front).

Copies are batched: every (lead | whole pages | tail) part of every head with the same layout moves
with one fancy-indexed numpy assignment, i.e. one memcpy per page block, not one Python call per
page.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

import numpy as np

from kvd.errors import ErrorCode, KvdError


class PageSpace:
    """The page area of a buffer: ``page_count`` pages of ``page_bytes`` from ``pages_offset``."""

    def __init__(self, buf: Any, pages_offset: int, page_bytes: int, page_count: int):
        self.buf = buf
        self.pages_offset = pages_offset
        self.page_bytes = page_bytes
        self.page_count = page_count

    def blocks(self, start: int, width: int) -> np.ndarray:
        """Bytes ``[start, start + width)`` of every page as a strided 1-D array of opaque
        ``width``-byte elements (no copy). Indexing it with page ids copies whole blocks."""
        if start < 0 or width < 0 or start + width > self.page_bytes:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: block [{start}, {start + width}) does not fit a "
                           f"{self.page_bytes}-byte page; does head_dim match the model?")
        return np.ndarray(shape=(self.page_count,), dtype=np.dtype((np.void, max(width, 1))),
                          buffer=self.buf, offset=self.pages_offset + start,
                          strides=(self.page_bytes,))

    def check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.page_count):
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: page id outside the arena's {self.page_count} pages")


def split(first_slot: int, n: int, page_tokens: int) -> Tuple[int, int, int]:
    """``(lead, whole, tail)``: tokens that finish the partly filled first page, whole pages, and
    tokens in a last partly filled page, for ``n`` tokens starting at ``first_slot``."""
    lead = min(n, page_tokens - first_slot) if first_slot else 0
    whole, tail = divmod(n - lead, page_tokens)
    return lead, whole, tail


def pages_needed(first_slot: int, n: int, page_tokens: int) -> int:
    lead, whole, tail = split(first_slot, n, page_tokens)
    return (lead > 0) + whole + (tail > 0)


def _as_blocks(src: np.ndarray, per_head: int, width: int) -> np.ndarray:
    """``src`` ``[heads, per_head * tokens, dim]`` as ``[heads, per_head]`` opaque ``width``-byte
    blocks. A view when each head's rows are contiguous (the usual case): no extra copy."""
    heads = src.shape[0]
    rows = src.reshape(heads, per_head, -1)
    if not rows.flags.c_contiguous and rows.strides[-1] != rows.itemsize:
        rows = np.ascontiguousarray(rows)
    return rows.view(np.dtype((np.void, width))).reshape(heads, per_head)


def write_tokens(space: PageSpace, page_ids: Sequence[Optional[np.ndarray]], first_slots: Sequence[int],
                 keys: np.ndarray, values: np.ndarray, page_tokens: int) -> None:
    """Write ``keys``/``values`` ``[layers, kv_heads, n, head_dim]`` into the pages of every head.

    ``page_ids[h]`` / ``first_slots[h]`` describe head ``h`` (layer-major). Checks every head's page
    count and every id before writing anything.
    """
    layers, kv_heads, n, dim = keys.shape
    heads = layers * kv_heads
    token_bytes = dim * keys.dtype.itemsize
    if len(page_ids) != heads or len(first_slots) != heads:
        raise KvdError(ErrorCode.INTERNAL,
                       f"kvd: reservation describes {len(page_ids)} heads, the tensors have {heads}")
    if 2 * page_tokens * token_bytes > space.page_bytes:
        raise KvdError(ErrorCode.INVALID_ARGUMENT,
                       f"kvd: {page_tokens} tokens x head_dim {dim} x {keys.dtype} do not fit a "
                       f"{space.page_bytes}-byte page; does head_dim match the model?")
    groups: Dict[int, List[int]] = {}
    for h, (slot, ids) in enumerate(zip(first_slots, page_ids)):
        if ids is None:
            continue  # an aliased layer (KVSharer) stores nothing
        if not 0 <= slot < page_tokens or len(ids) != pages_needed(slot, n, page_tokens):
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: head {divmod(h, kv_heads)} has {len(ids)} pages from slot {slot}; "
                           f"{n} tokens need {pages_needed(slot, n, page_tokens)}")
        space.check_ids(ids)
        groups.setdefault(int(slot), []).append(h)

    k_all = keys.reshape(heads, n, dim)
    v_all = values.reshape(heads, n, dim)
    value_block = page_tokens * token_bytes
    for slot, hs in groups.items():
        ids = np.stack([cast(np.ndarray, page_ids[h]) for h in hs]).astype(np.int64, copy=False)
        pick = slice(None) if len(hs) == heads else np.asarray(hs)
        k, v = k_all[pick], v_all[pick]
        g = len(hs)
        lead, whole, tail = split(slot, n, page_tokens)
        # (first byte in page, tokens per block, page ids [g, blocks], token rows)
        parts = []
        if lead:
            parts.append((slot * token_bytes, lead, ids[:, :1], slice(0, lead)))
        if whole:
            first = 1 if lead else 0
            parts.append((0, page_tokens, ids[:, first:first + whole], slice(lead, lead + whole * page_tokens)))
        if tail:
            parts.append((0, tail, ids[:, -1:], slice(n - tail, n)))
        for start, tokens, where, rows in parts:
            width = tokens * token_bytes
            per_head = where.shape[1]
            space.blocks(start, width)[where] = _as_blocks(k[:, rows], per_head, width)
            space.blocks(value_block + start, width)[where] = _as_blocks(v[:, rows], per_head, width)


def read_tokens(space: PageSpace, page_ids: np.ndarray, n: int, dim: int, dtype: np.dtype,
                page_tokens: int, values: bool) -> np.ndarray:
    """K (or V) of heads packed from slot 0: ``page_ids`` ``[heads, m]`` → ``[heads, n, dim]``
    (one copy)."""
    dtype = np.dtype(dtype)
    heads, m = page_ids.shape
    width = page_tokens * dim * dtype.itemsize
    if n == 0 or m == 0:
        return np.empty((heads, 0, dim), dtype=dtype)
    space.check_ids(page_ids)
    raw = space.blocks(width if values else 0, width)[page_ids.reshape(-1)]
    return raw.view(dtype).reshape(heads, m * page_tokens, dim)[:, :n]


def reservation_pages(heads: Any, layers: int,
                      kv_heads: int) -> Tuple[List[Optional[np.ndarray]], List[int]]:
    """Page ids and first slots of every head of a ``ReserveResponse``, layer-major.

    Checks each (layer, head) of the ``[layers, kv_heads]`` grid appears exactly once.
    """
    ids: List = [None] * (layers * kv_heads)
    slots = [0] * (layers * kv_heads)
    aliased = set()
    for hs in heads:
        if not (0 <= hs.layer < layers and 0 <= hs.head < kv_heads):
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: reservation names head ({hs.layer}, {hs.head}) outside the "
                           f"tensors' [{layers}, {kv_heads}] heads")
        i = hs.layer * kv_heads + hs.head
        if ids[i] is not None:
            raise KvdError(ErrorCode.INTERNAL, f"kvd: reservation names head ({hs.layer}, {hs.head}) twice")
        ids[i] = np.frombuffer(hs.page_ids, dtype="<u4").astype(np.int64)
        slots[i] = hs.first_slot
        if hs.aliased:
            aliased.add(i)
    missing = sum(x is None for x in ids)
    if missing:
        raise KvdError(ErrorCode.INVALID_ARGUMENT,
                       f"kvd: reservation covers {len(ids) - missing} heads but the tensors have "
                       f"{layers} layers x {kv_heads} heads")
    # Aliased layers' heads come back as None: write_tokens skips them.
    return [None if i in aliased else x for i, x in enumerate(ids)], slots
