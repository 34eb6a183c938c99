"""Mapping the daemon's shared-memory arena and reading/writing K/V runs inside it.

The segment is opened through ``/dev/shm`` with ``os.open`` + ``mmap`` rather than
``multiprocessing.shared_memory``: the latter registers the segment with Python's resource tracker,
which unlinks it (i.e. deletes the daemon's arena) when this process exits.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from typing import Iterable, List, NamedTuple, Sequence

import numpy as np

from kvd.errors import ErrorCode, KvdError

MAGIC = b"KVDARENA"
# Little-endian header, see docs/PROTOCOL.md "Shared memory".
_HEADER = struct.Struct("<8sIIQQQIIQQQ")


@dataclasses.dataclass(frozen=True)
class ArenaHeader:
    """The fixed header at offset 0 of the segment."""

    magic: bytes
    layout_version: int
    header_bytes: int
    arena_generation: int
    size_bytes: int
    page_bytes: int
    page_count: int
    reserved: int
    pages_offset: int
    staging_offset: int
    staging_bytes: int


def parse_header(buf) -> ArenaHeader:
    """Decode the arena header from the first bytes of ``buf`` (any buffer of >= 72 bytes)."""
    if len(buf) < _HEADER.size:
        raise KvdError(ErrorCode.INTERNAL, f"kvd: arena segment is only {len(buf)} bytes")
    return ArenaHeader(*_HEADER.unpack_from(buf, 0))


def shm_path(name: str) -> str:
    """Filesystem path of a POSIX shm object on Linux: ``/dev/shm/<name without leading slash>``."""
    return "/dev/shm/" + name.lstrip("/")


class Run(NamedTuple):
    """``count`` consecutive tokens ``[token, token + count)`` of head (layer, head) and where their
    K and V live (byte offsets from the segment start)."""

    layer: int
    head: int
    token: int
    count: int
    page: int
    key_offset: int
    value_offset: int


def reservation_runs(heads: Iterable, num_tokens: int, layers: int, kv_heads: int) -> List[Run]:
    """Flatten ``ReserveResponse.heads`` (HeadSlots) into runs with each run's first token index.

    Checks what the writes depend on: every (layer, head) of the ``[layers, kv_heads]`` grid appears
    exactly once and each head's slot counts add up to ``num_tokens``. Raises KvdError otherwise,
    before anything is written.
    """
    runs: List[Run] = []
    seen = set()
    for hs in heads:
        key = (hs.layer, hs.head)
        if not (0 <= hs.layer < layers and 0 <= hs.head < kv_heads) or key in seen:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: reservation names head {key} outside [{layers}, {kv_heads}] "
                           "or twice")
        seen.add(key)
        token = 0
        for s in hs.slots:
            runs.append(Run(hs.layer, hs.head, token, s.count, s.page, s.key_offset, s.value_offset))
            token += s.count
        if token != num_tokens:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: reservation slots of head {key} hold {token} tokens, "
                           f"expected {num_tokens}")
    if len(seen) != layers * kv_heads:
        raise KvdError(ErrorCode.INVALID_ARGUMENT,
                       f"kvd: reservation covers {len(seen)} heads but the tensors have "
                       f"{layers} layers x {kv_heads} heads")
    return runs


def write_runs(buf, runs: Sequence[Run], keys: np.ndarray, values: np.ndarray,
               page_bounds=None) -> None:
    """Copy ``keys``/``values`` ``[layers, kv_heads, tokens, head_dim]`` into ``buf`` at the runs.

    Run r receives ``keys[r.layer, r.head, r.token : r.token + r.count]`` (``count * head_dim``
    contiguous elements) at ``r.key_offset``, and likewise for values. ``page_bounds(page)`` may
    return ``(start, end)`` byte offsets of a page; each run is then checked to stay inside its
    page, so a wrong head_dim can never scribble over another sequence's pages.
    """
    dim = keys.shape[3]
    isz = keys.dtype.itemsize
    size = len(buf)
    for r in runs:
        nbytes = r.count * dim * isz
        for off in (r.key_offset, r.value_offset):
            lo, hi = (0, size) if page_bounds is None else page_bounds(r.page)
            if off < lo or off + nbytes > hi:
                raise KvdError(ErrorCode.INVALID_ARGUMENT,
                               f"kvd: run of {r.count} tokens x head_dim {dim} at byte {off} "
                               f"does not fit page {r.page} [{lo}, {hi}); does head_dim match "
                               "the model?")
        n = r.count * dim
        dst = np.frombuffer(buf, dtype=keys.dtype, count=n, offset=r.key_offset)
        dst[:] = keys[r.layer, r.head, r.token:r.token + r.count].reshape(n)
        dst = np.frombuffer(buf, dtype=values.dtype, count=n, offset=r.value_offset)
        dst[:] = values[r.layer, r.head, r.token:r.token + r.count].reshape(n)
        del dst  # drop the buffer export right away so the mmap can be closed later


class Arena:
    """The daemon's shm segment mapped read-write, shared.

    ``info`` is the ``SharedMemoryInfo`` from Hello. Arrays returned by :meth:`array` are views
    into the mapping (no copy); they stay readable after :meth:`close` only as long as they exist,
    because NumPy keeps the mapping alive.
    """

    def __init__(self, info):
        self.info = info
        self.path = shm_path(info.name)
        try:
            fd = os.open(self.path, os.O_RDWR)
        except OSError as e:
            raise KvdError(ErrorCode.UNAVAILABLE,
                           f"kvd: cannot open shared memory {self.path}: {e.strerror}; is the "
                           "client on the daemon's host and user?") from None
        try:
            actual = os.fstat(fd).st_size
            if actual < info.size_bytes:
                raise KvdError(ErrorCode.INTERNAL,
                               f"kvd: {self.path} has {actual} bytes, Hello said {info.size_bytes}")
            self._mm = mmap.mmap(fd, info.size_bytes, flags=mmap.MAP_SHARED,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)  # the mapping keeps the object alive; the descriptor is not needed
        self.header = parse_header(self._mm)
        if self.header.magic != MAGIC:
            self.close()
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: {self.path} does not start with {MAGIC!r}")

    @property
    def buffer(self) -> mmap.mmap:
        """The raw mapping."""
        return self._mm

    @property
    def generation(self) -> int:
        """Arena generation as written in the header now (re-read on every access)."""
        return parse_header(self._mm).arena_generation

    def page_bounds(self, page: int):
        """``(start, end)`` byte offsets of page ``page``."""
        if not 0 <= page < self.info.page_count:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: page {page} outside the arena's {self.info.page_count} pages")
        start = self.info.pages_offset + page * self.info.page_bytes
        return start, start + self.info.page_bytes

    def array(self, offset: int, count: int, dtype, shape=None, writable: bool = False) -> np.ndarray:
        """``count`` elements of ``dtype`` at byte ``offset``, as a view into the mapping.

        Read-only unless ``writable``: a query's views must not modify the cache by accident.
        """
        dtype = np.dtype(dtype)
        if offset < 0 or offset + count * dtype.itemsize > self.info.size_bytes:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: {count} x {dtype} at byte {offset} is outside the "
                           f"{self.info.size_bytes}-byte arena")
        a = np.frombuffer(self._mm, dtype=dtype, count=count, offset=offset)
        if not writable:
            a.flags.writeable = False
        return a if shape is None else a.reshape(shape)

    def write_runs(self, runs: Sequence[Run], keys: np.ndarray, values: np.ndarray) -> None:
        """:func:`write_runs` into this arena, with every run checked against its page."""
        write_runs(self._mm, runs, keys, values, page_bounds=self.page_bounds)

    def close(self) -> None:
        """Unmap. If views are still alive the mapping is left to the garbage collector instead."""
        mm, self._mm = getattr(self, "_mm", None), None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # exported NumPy views still use it; it is unmapped when they are gone
