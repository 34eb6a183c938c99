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
from typing import Any, Optional, Tuple

import numpy as np

from kvd.errors import ErrorCode, KvdError
from kvd.paging import PageSpace, reservation_pages, write_tokens

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


def parse_header(buf: Any) -> ArenaHeader:
    """Decode the arena header from the first bytes of ``buf`` (any buffer of >= 72 bytes)."""
    if len(buf) < _HEADER.size:
        raise KvdError(ErrorCode.INTERNAL, f"kvd: arena segment is only {len(buf)} bytes")
    return ArenaHeader(*_HEADER.unpack_from(buf, 0))


def shm_path(name: str) -> str:
    """Filesystem path of a POSIX shm object on Linux: ``/dev/shm/<name without leading slash>``."""
    return "/dev/shm/" + name.lstrip("/")


class Arena:
    """The daemon's shm segment mapped read-write, shared.

    ``info`` is the ``SharedMemoryInfo`` from Hello. Arrays returned by :meth:`array` are views
    into the mapping (no copy); they stay readable after :meth:`close` only as long as they exist,
    because NumPy keeps the mapping alive.
    """

    def __init__(self, info: Any) -> None:
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
        self._bytes = np.frombuffer(self._mm, dtype=np.uint8)
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

    def page_bounds(self, page: int) -> Tuple[int, int]:
        """``(start, end)`` byte offsets of page ``page``."""
        if not 0 <= page < self.info.page_count:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: page {page} outside the arena's {self.info.page_count} pages")
        start = self.info.pages_offset + page * self.info.page_bytes
        return start, start + self.info.page_bytes

    def array(self, offset: int, count: int, dtype: Any, shape: Optional[Tuple[int, ...]] = None,
              writable: bool = False) -> np.ndarray:
        """``count`` elements of ``dtype`` at byte ``offset``, as a view into the mapping.

        Read-only unless ``writable``: a query's views must not modify the cache by accident.
        """
        dtype = np.dtype(dtype)
        end = offset + count * dtype.itemsize
        if offset < 0 or end > self.info.size_bytes:
            raise KvdError(ErrorCode.INTERNAL,
                           f"kvd: {count} x {dtype} at byte {offset} is outside the "
                           f"{self.info.size_bytes}-byte arena")
        # Slicing one cached byte view is several times cheaper than np.frombuffer per call.
        a = self._bytes[offset:end].view(dtype)
        if not writable:
            a.flags.writeable = False
        return a if shape is None else a.reshape(shape)

    @property
    def pages(self) -> PageSpace:
        """The page area, for batched reads and writes (see :mod:`kvd.paging`)."""
        i = self.info
        return PageSpace(self._mm, i.pages_offset, i.page_bytes, i.page_count)

    def write_reservation(self, reservation: Any, keys: np.ndarray, values: np.ndarray) -> None:
        """Write ``keys``/``values`` ``[layers, kv_heads, tokens, head_dim]`` into the pages of a
        ``ReserveResponse`` (checked against the tensors before anything is written)."""
        ids, slots = reservation_pages(reservation.heads, keys.shape[0], keys.shape[1])
        if keys.shape[2] != reservation.num_tokens:
            raise KvdError(ErrorCode.INVALID_ARGUMENT,
                           f"kvd: {keys.shape[2]} tokens to write, {reservation.num_tokens} reserved")
        write_tokens(self.pages, ids, slots, keys, values, reservation.page_tokens)

    def close(self) -> None:
        """Unmap. If views are still alive the mapping is left to the garbage collector instead."""
        self._bytes = None  # type: ignore[assignment]  # closed: no buffer any more
        mm, self._mm = getattr(self, "_mm", None), None  # type: ignore[assignment]
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # exported NumPy views still use it; it is unmapped when they are gone
