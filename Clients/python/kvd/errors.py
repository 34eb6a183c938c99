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

    # Set once a pipelined failure (kvd.pipeline) has been raised to the caller, so it is raised
    # once from the next call and not again from close().
    reported: bool = False

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
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class EvictedError(KvdError):
    """Code ``EVICTED``: kvd's memory manager took the sequence back — evicted under memory
    pressure, or released after its lease expired and the grace period ended (the message says
    which). Its K/V is gone: create the sequence again (the same id is allowed) and re-run prefill.
    """


# Codes that get their own subclass, so callers can ``except EvictedError`` instead of comparing
# codes; every other code is a plain KvdError.
_SUBCLASSES = {ErrorCode.EVICTED: EvictedError}


def error_for(code: int, message: str, request_id: int = 0) -> KvdError:
    """The exception for an error the daemon (or the client) reports with ``code``."""
    try:
        cls = _SUBCLASSES.get(ErrorCode(int(code)), KvdError)
    except ValueError:
        cls = KvdError
    return cls(code, message, request_id)
