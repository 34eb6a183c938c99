from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class RemoteStats(_message.Message):
    __slots__ = ["blocks_imported", "blocks_publish_failures", "blocks_published", "blocks_rejected", "enabled", "last_restore_us", "mean_restore_us", "offload_dropped", "offload_failures", "offloaded", "offloaded_bytes", "queued", "queued_bytes", "restore_corrupted", "restore_failures", "restored"]
    BLOCKS_IMPORTED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_PUBLISH_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAST_RESTORE_US_FIELD_NUMBER: _ClassVar[int]
    MEAN_RESTORE_US_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_DROPPED_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_FAILURES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    RESTORED_FIELD_NUMBER: _ClassVar[int]
    RESTORE_CORRUPTED_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    blocks_imported: int
    blocks_publish_failures: int
    blocks_published: int
    blocks_rejected: int
    enabled: bool
    last_restore_us: int
    mean_restore_us: int
    offload_dropped: int
    offload_failures: int
    offloaded: int
    offloaded_bytes: int
    queued: int
    queued_bytes: int
    restore_corrupted: int
    restore_failures: int
    restored: int
    def __init__(self, enabled: bool = ..., offloaded: _Optional[int] = ..., offloaded_bytes: _Optional[int] = ..., offload_failures: _Optional[int] = ..., offload_dropped: _Optional[int] = ..., restored: _Optional[int] = ..., restore_failures: _Optional[int] = ..., restore_corrupted: _Optional[int] = ..., last_restore_us: _Optional[int] = ..., mean_restore_us: _Optional[int] = ..., queued: _Optional[int] = ..., queued_bytes: _Optional[int] = ..., blocks_published: _Optional[int] = ..., blocks_publish_failures: _Optional[int] = ..., blocks_imported: _Optional[int] = ..., blocks_rejected: _Optional[int] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ["sequence_id"]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ["bytes", "from_remote", "generation", "length", "restore_us", "sequence_id"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    FROM_REMOTE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    RESTORE_US_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    from_remote: bool
    generation: int
    length: int
    restore_us: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., length: _Optional[int] = ..., generation: _Optional[int] = ..., from_remote: bool = ..., restore_us: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
