from kvd.v1 import prefix_pb2 as _prefix_pb2
from kvd.v1 import remote_pb2 as _remote_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MemoryStats(_message.Message):
    __slots__ = ["compactions", "compactions_pages", "events_published", "evictions", "evictions_pages", "high", "last_reclaim_reached_low", "last_reclaim_us", "low", "orphans", "orphans_released", "orphans_released_pages", "pinned_pages", "pinned_sequences", "reclaim_passes", "reservations_aborted", "reservations_aborted_pages", "synchronous_reclaims", "window_freed_pages", "window_returned_pages"]
    COMPACTIONS_FIELD_NUMBER: _ClassVar[int]
    COMPACTIONS_PAGES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_PAGES_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LAST_RECLAIM_REACHED_LOW_FIELD_NUMBER: _ClassVar[int]
    LAST_RECLAIM_US_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_RELEASED_FIELD_NUMBER: _ClassVar[int]
    ORPHANS_RELEASED_PAGES_FIELD_NUMBER: _ClassVar[int]
    PINNED_PAGES_FIELD_NUMBER: _ClassVar[int]
    PINNED_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    RECLAIM_PASSES_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_ABORTED_FIELD_NUMBER: _ClassVar[int]
    RESERVATIONS_ABORTED_PAGES_FIELD_NUMBER: _ClassVar[int]
    SYNCHRONOUS_RECLAIMS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FREED_PAGES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_RETURNED_PAGES_FIELD_NUMBER: _ClassVar[int]
    compactions: int
    compactions_pages: int
    events_published: int
    evictions: int
    evictions_pages: int
    high: float
    last_reclaim_reached_low: bool
    last_reclaim_us: int
    low: float
    orphans: int
    orphans_released: int
    orphans_released_pages: int
    pinned_pages: int
    pinned_sequences: int
    reclaim_passes: int
    reservations_aborted: int
    reservations_aborted_pages: int
    synchronous_reclaims: int
    window_freed_pages: int
    window_returned_pages: int
    def __init__(self, high: _Optional[float] = ..., low: _Optional[float] = ..., reservations_aborted: _Optional[int] = ..., reservations_aborted_pages: _Optional[int] = ..., orphans_released: _Optional[int] = ..., orphans_released_pages: _Optional[int] = ..., compactions: _Optional[int] = ..., compactions_pages: _Optional[int] = ..., evictions: _Optional[int] = ..., evictions_pages: _Optional[int] = ..., reclaim_passes: _Optional[int] = ..., synchronous_reclaims: _Optional[int] = ..., last_reclaim_us: _Optional[int] = ..., last_reclaim_reached_low: bool = ..., orphans: _Optional[int] = ..., pinned_sequences: _Optional[int] = ..., pinned_pages: _Optional[int] = ..., events_published: _Optional[int] = ..., window_freed_pages: _Optional[int] = ..., window_returned_pages: _Optional[int] = ...) -> None: ...

class SequenceStats(_message.Message):
    __slots__ = ["aliased_layers", "bytes", "generation", "idle_ms", "last_method", "lease_remaining_ms", "length", "manager_compactions", "model", "orphan", "pages", "pinned", "reserved_tokens", "sequence_id", "staging_bytes", "tenant", "tokens_held"]
    ALIASED_LAYERS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    IDLE_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_METHOD_FIELD_NUMBER: _ClassVar[int]
    LEASE_REMAINING_MS_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MANAGER_COMPACTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGING_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_HELD_FIELD_NUMBER: _ClassVar[int]
    aliased_layers: int
    bytes: int
    generation: int
    idle_ms: int
    last_method: str
    lease_remaining_ms: int
    length: int
    manager_compactions: int
    model: str
    orphan: bool
    pages: int
    pinned: bool
    reserved_tokens: int
    sequence_id: int
    staging_bytes: int
    tenant: str
    tokens_held: int
    def __init__(self, sequence_id: _Optional[int] = ..., model: _Optional[str] = ..., tenant: _Optional[str] = ..., length: _Optional[int] = ..., generation: _Optional[int] = ..., pages: _Optional[int] = ..., tokens_held: _Optional[int] = ..., reserved_tokens: _Optional[int] = ..., staging_bytes: _Optional[int] = ..., aliased_layers: _Optional[int] = ..., idle_ms: _Optional[int] = ..., lease_remaining_ms: _Optional[int] = ..., orphan: bool = ..., pinned: bool = ..., bytes: _Optional[int] = ..., manager_compactions: _Optional[int] = ..., last_method: _Optional[str] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ["sequence_id"]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ["errors", "free_pages", "memory", "page_bytes", "prefix", "remote", "requests", "sequence", "sequences", "staging_bytes", "staging_used_bytes", "total_pages"]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    FREE_PAGES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    REMOTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STAGING_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGING_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    errors: int
    free_pages: int
    memory: MemoryStats
    page_bytes: int
    prefix: _prefix_pb2.PrefixStats
    remote: _remote_pb2.RemoteStats
    requests: int
    sequence: SequenceStats
    sequences: int
    staging_bytes: int
    staging_used_bytes: int
    total_pages: int
    def __init__(self, total_pages: _Optional[int] = ..., free_pages: _Optional[int] = ..., page_bytes: _Optional[int] = ..., sequences: _Optional[int] = ..., staging_bytes: _Optional[int] = ..., staging_used_bytes: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., sequence: _Optional[_Union[SequenceStats, _Mapping]] = ..., memory: _Optional[_Union[MemoryStats, _Mapping]] = ..., prefix: _Optional[_Union[_prefix_pb2.PrefixStats, _Mapping]] = ..., remote: _Optional[_Union[_remote_pb2.RemoteStats, _Mapping]] = ...) -> None: ...
