"""Error codes and the exception every failed kvd call raises."""

from __future__ import annotations

import enum

from kvd.v1 import common_pb2


class ErrorCode(enum.IntEnum):
    """Mirror of ``kvd.v1.ErrorCode`` without the ``ERROR_CODE_`` prefix.

    The numbers are the wire values, so ``ErrorCode(err.code)`` works on a decoded ``Error``.
    """

    UNSPECIFIED = 0
    INVALID_ARGUMENT = 1
    NOT_FOUND = 2
    ALREADY_EXISTS = 3
    RESOURCE_EXHAUSTED = 4
    FAILED_PRECONDITION = 5
    PERMISSION_DENIED = 6
    UNIMPLEMENTED = 7
    INTERNAL = 8
    UNAVAILABLE = 9
    EVICTED = 10


# Fail at import time rather than mislabel errors if the schema ever gains or renumbers a code.
for _name, _value in common_pb2.ErrorCode.items():
    assert ErrorCode[_name.removeprefix("ERROR_CODE_")] == _value, _name


class KvdError(Exception):
    """A request failed, either on the daemon (its ``Error`` reply) or in the client.

    ``code`` is an :class:`ErrorCode`; ``raw_code`` keeps the wire integer even when it is a code
    newer than this client knows (then ``code`` is ``UNSPECIFIED``). ``request_id`` is the id of
    the failed request, or 0 when the failure happened before sending.
    """

    def __init__(self, code: int, message: str, request_id: int = 0):
        self.raw_code = int(code)
        try:
            self.code = ErrorCode(self.raw_code)
        except ValueError:
            self.code = ErrorCode.UNSPECIFIED
        self.message = message
        self.request_id = request_id
        super().__init__(code, message)

    def __str__(self) -> str:
        name = self.code.name if self.code != ErrorCode.UNSPECIFIED else str(self.raw_code)
        return f"[{name}] {self.message}"

    def __repr__(self) -> str:
        return f"KvdError({self.code!r}, {self.message!r})"
