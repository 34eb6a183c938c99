"""Mapping between kvd.v1.DType and NumPy dtypes.

K and V are little-endian on the wire and in the arena, so every NumPy dtype here is explicitly
little-endian; arrays in another byte order are converted before they are sent.
"""

from __future__ import annotations

from typing import Any, Dict

import ml_dtypes
import numpy as np
import numpy.typing  # noqa: F401  (np.typing.DTypeLike)

from kvd.errors import ErrorCode, KvdError
from kvd.v1 import common_pb2

F16 = common_pb2.DTYPE_F16
BF16 = common_pb2.DTYPE_BF16
F32 = common_pb2.DTYPE_F32

_TO_NUMPY = {
    F16: np.dtype("<f2"),
    # ml_dtypes' bfloat16 is a one-byte-order type whose memory layout is the little-endian one.
    BF16: np.dtype(ml_dtypes.bfloat16),
    F32: np.dtype("<f4"),
}

# Unsigned integers of the same width, for bit-exact comparisons (NaN != NaN otherwise).
_BITS: Dict[int, np.dtype] = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def to_numpy(dtype: int) -> np.dtype:  # dtype: a kvd.v1.DType value
    """NumPy dtype for a ``kvd.v1.DType`` value; raises KvdError for UNSPECIFIED or unknown."""
    try:
        return _TO_NUMPY[dtype]  # type: ignore[index]  # a DType is an int at run time
    except KeyError:
        raise KvdError(ErrorCode.INVALID_ARGUMENT,
                       f"kvd: unsupported DType {dtype}; expected F16, BF16 or F32") from None


def from_numpy(dtype: "np.typing.DTypeLike") -> Any:  # a kvd.v1.DType (an int)
    """``kvd.v1.DType`` value for a NumPy dtype (either byte order); raises KvdError otherwise."""
    dt = np.dtype(dtype)
    if dt == np.dtype(ml_dtypes.bfloat16):
        return BF16
    if dt.kind == "f" and dt.itemsize == 2:
        return F16
    if dt.kind == "f" and dt.itemsize == 4:
        return F32
    raise KvdError(ErrorCode.INVALID_ARGUMENT,
                   f"kvd: dtype {dt} is not float16, bfloat16 or float32")


def itemsize(dtype: int) -> int:
    """Bytes per element of a ``kvd.v1.DType``."""
    return to_numpy(dtype).itemsize


def wire_array(arr: np.ndarray) -> np.ndarray:
    """``arr`` as a C-contiguous little-endian array of a supported dtype (copies only if needed)."""
    arr = np.asarray(arr)
    target = to_numpy(from_numpy(arr.dtype))
    return np.ascontiguousarray(arr, dtype=target)


def bits(arr: np.ndarray) -> np.ndarray:
    """Reinterpret a float array as unsigned integers of the same width, for bit-exact checks."""
    arr = np.ascontiguousarray(arr)
    return arr.view(_BITS[arr.dtype.itemsize])
