"""Hand-assembled wire form of the one request that carries bulk bytes: an inline Append.

Building it through protobuf copies every K/V byte three times (``tobytes``, the message field,
``SerializeToString``) before ZeroMQ copies it a fourth time. A protobuf message is the
concatenation of its fields, so the small parts are serialized by protobuf and the two tensors'
``data`` fields are spliced in by hand: one join copies K and V once, and the result is sent
without another copy. Byte-for-byte equal to ``Request.SerializeToString()`` (a unit test checks).

Token ids (prefix reuse) travel as ``bytes``, uint32 little-endian; :func:`token_ids` encodes them.
A Query's positions may come as runs (``HeadView.position_runs``); :func:`positions_from_runs`
expands and checks them.
"""
from __future__ import annotations

from typing import Iterable, Union

import numpy as np

from kvd import dtypes
from kvd.errors import ErrorCode, KvdError
from kvd.v1 import append_pb2, common_pb2, envelope_pb2

_REQUEST_APPEND = 12        # Request.append
_APPEND_KEYS, _APPEND_VALUES, _APPEND_TOKEN_IDS = 2, 3, 4
_TENSOR_DATA = 3


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(field: int, length: int) -> bytes:
    return _varint(field << 3 | 2) + _varint(length)


def _tensor_parts(arr: np.ndarray) -> list:  # [bytes, memoryview]
    """Tensor {dtype, shape, data} as [header bytes, data view]."""
    head = common_pb2.Tensor(dtype=dtypes.from_numpy(arr.dtype), shape=arr.shape).SerializeToString()
    data = memoryview(arr.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # ndarray is a buffer  # bytes of any dtype (bfloat16 too)
    if len(data):
        head += _len_field(_TENSOR_DATA, len(data))
    return [head, data]


# (start int32, count uint32), little-endian: one entry of HeadView.position_runs.
RUN_DTYPE = np.dtype([("start", "<i4"), ("count", "<u4")])
_MAX_POSITION = 2**31 - 1


def positions_from_runs(runs: bytes, num_tokens: int) -> np.ndarray:
    """``HeadView.position_runs`` expanded to ``num_tokens`` int32 positions (a new array).

    The bytes come from the daemon, but a client must never trust them blindly: a length that is
    not a multiple of 8, counts that do not add up to ``num_tokens``, a negative start, a run past
    int32, or runs out of ascending order raise :class:`KvdError` (``INTERNAL``: a malformed reply)
    before anything of their size is allocated."""
    def bad(why: str) -> KvdError:
        return KvdError(ErrorCode.INTERNAL, f"kvd: malformed position runs ({len(runs)} bytes for "
                                            f"{num_tokens} tokens): {why}")
    if len(runs) % RUN_DTYPE.itemsize:
        raise bad("length is not a multiple of 8")
    r = np.frombuffer(runs, dtype=RUN_DTYPE)
    if len(r) == 1:  # the usual case (never compacted): no temporaries
        start, count = int(r["start"][0]), int(r["count"][0])
        if count != num_tokens:
            raise bad(f"counts add up to {count}")
        if start < 0 or start + count - 1 > _MAX_POSITION:
            raise bad("a run leaves 0 .. 2**31-1")
        return np.arange(start, start + count, dtype="<i4")
    starts = r["start"].astype(np.int64)
    counts = r["count"].astype(np.int64)
    total = int(counts.sum())  # < 2**32 * len(runs): no overflow in int64
    if total != num_tokens:
        raise bad(f"counts add up to {total}")
    if len(r) == 0:
        return np.empty(0, dtype="<i4")
    ends = starts + counts  # one past each run's last position
    if int(starts.min()) < 0 or int(ends.max()) - 1 > _MAX_POSITION:
        raise bad("a run leaves 0 .. 2**31-1")
    if np.any(counts == 0) or np.any(starts[1:] < ends[:-1]):
        raise bad("runs are empty or not ascending")
    # Position of token t in run i is starts[i] + (t - first token of run i).
    firsts = np.cumsum(counts) - counts
    return (np.repeat(starts - firsts, counts) + np.arange(num_tokens, dtype=np.int64)).astype("<i4")


def token_ids(ids: Union[Iterable[int], np.ndarray]) -> bytes:
    """Token ids (any sequence of ints or integer array) as uint32 little-endian bytes.
    Raises TypeError for non-integers (and for bytes: pass ints), ValueError outside 0 .. 2**32-1."""
    if isinstance(ids, (bytes, bytearray, memoryview, str)):
        raise TypeError(f"kvd: token ids must be a sequence of ints, not {type(ids).__name__}")
    a = np.asarray(ids)
    if a.size == 0:
        return b""
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"kvd: token ids must be a 1-D sequence of ints; got shape {a.shape} "
                        f"dtype {a.dtype}")
    if a.dtype != np.dtype("<u4") and (int(a.min()) < 0 or int(a.max()) > 0xFFFFFFFF):
        raise ValueError("kvd: token ids must be in 0 .. 2**32-1")
    return a.astype("<u4", copy=False).tobytes()


def inline_append(request_id: int, protocol_version: int, seq: int, keys: np.ndarray, values: np.ndarray,
                  token_ids: bytes = b"") -> bytes:
    """The serialized ``Request{append: {sequence_id, keys, values, token_ids}}`` (``token_ids``
    already encoded, see :func:`token_ids`; empty = none, and then not on the wire)."""
    k, v = dtypes.wire_array(keys), dtypes.wire_array(values)
    body = [append_pb2.AppendRequest(sequence_id=seq).SerializeToString()]
    for field, arr in ((_APPEND_KEYS, k), (_APPEND_VALUES, v)):
        parts = _tensor_parts(arr)
        body += [_len_field(field, len(parts[0]) + len(parts[1]))] + parts
    if token_ids:  # field 4 follows the tensors, as protobuf orders fields by number
        body += [_len_field(_APPEND_TOKEN_IDS, len(token_ids)), token_ids]
    head = envelope_pb2.Request(request_id=request_id, protocol_version=protocol_version).SerializeToString()
    head += _len_field(_REQUEST_APPEND, sum(len(p) for p in body))
    return b"".join([head] + body)
