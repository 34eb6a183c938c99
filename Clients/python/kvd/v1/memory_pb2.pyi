from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ["bytes_freed", "generation", "kind", "limit_pages", "method", "pages_freed", "reason", "sequence_id", "sequence_number", "tenant", "time_unix_ms", "tokens_after", "tokens_before", "used_pages"]
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    KIND_COMPACTED: Event.Kind
    KIND_EVICTED: Event.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    KIND_LEASE_EXPIRED: Event.Kind
    KIND_ORPHAN_RELEASED: Event.Kind
    KIND_RESERVATION_ABORTED: Event.Kind
    KIND_UNSPECIFIED: Event.Kind
    LIMIT_PAGES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGES_FREED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_AFTER_FIELD_NUMBER: _ClassVar[int]
    TOKENS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    USED_PAGES_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    generation: int
    kind: Event.Kind
    limit_pages: int
    method: str
    pages_freed: int
    reason: str
    sequence_id: int
    sequence_number: int
    tenant: str
    time_unix_ms: int
    tokens_after: int
    tokens_before: int
    used_pages: int
    def __init__(self, sequence_number: _Optional[int] = ..., kind: _Optional[_Union[Event.Kind, str]] = ..., tenant: _Optional[str] = ..., sequence_id: _Optional[int] = ..., time_unix_ms: _Optional[int] = ..., generation: _Optional[int] = ..., pages_freed: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., method: _Optional[str] = ..., tokens_before: _Optional[int] = ..., tokens_after: _Optional[int] = ..., reason: _Optional[str] = ..., used_pages: _Optional[int] = ..., limit_pages: _Optional[int] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ["sequence_ids"]
    SEQUENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    sequence_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequence_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ["adopted", "lease_ms", "missing"]
    ADOPTED_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    adopted: int
    lease_ms: int
    missing: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, lease_ms: _Optional[int] = ..., adopted: _Optional[int] = ..., missing: _Optional[_Iterable[int]] = ...) -> None: ...

class PinRequest(_message.Message):
    __slots__ = ["pinned", "sequence_id"]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    pinned: bool
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., pinned: bool = ...) -> None: ...

class PinResponse(_message.Message):
    __slots__ = ["pinned", "pinned_pages"]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    PINNED_PAGES_FIELD_NUMBER: _ClassVar[int]
    pinned: bool
    pinned_pages: int
    def __init__(self, pinned: bool = ..., pinned_pages: _Optional[int] = ...) -> None: ...
