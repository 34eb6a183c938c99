"""Hand-assembled wire form of the one request that carries bulk bytes: an inline Append.

Building it through protobuf copies every K/V byte three times (``tobytes``, the message field,
``SerializeToString``) before ZeroMQ copies it a fourth time. A protobuf message is the
concatenation of its fields, so the small parts are serialized by protobuf and the two tensors'
``data`` fields are spliced in by hand: one join copies K and V once, and the result is sent
without another copy. Byte-for-byte equal to ``Request.SerializeToString()`` (a unit test checks).

Token ids (prefix reuse) travel as ``bytes``, uint32 little-endian; :func:`token_ids` encodes them.
"""
import numpy as np

from kvd import dtypes
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


def _tensor_parts(arr: np.ndarray) -> list:
    """Tensor {dtype, shape, data} as [header bytes, data view]."""
    head = common_pb2.Tensor(dtype=dtypes.from_numpy(arr.dtype), shape=arr.shape).SerializeToString()
    data = memoryview(arr.reshape(-1).view(np.uint8))  # bytes of any dtype (bfloat16 too)
    if len(data):
        head += _len_field(_TENSOR_DATA, len(data))
    return [head, data]


def token_ids(ids) -> bytes:
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
