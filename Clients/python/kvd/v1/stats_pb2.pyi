from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SequenceStats(_message.Message):
    __slots__ = ["aliased_layers", "generation", "length", "model", "pages", "reserved_tokens", "sequence_id", "staging_bytes", "tenant", "tokens_held"]
    ALIASED_LAYERS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    RESERVED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    STAGING_BYTES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_HELD_FIELD_NUMBER: _ClassVar[int]
    aliased_layers: int
    generation: int
    length: int
    model: str
    pages: int
    reserved_tokens: int
    sequence_id: int
    staging_bytes: int
    tenant: str
    tokens_held: int
    def __init__(self, sequence_id: _Optional[int] = ..., model: _Optional[str] = ..., tenant: _Optional[str] = ..., length: _Optional[int] = ..., generation: _Optional[int] = ..., pages: _Optional[int] = ..., tokens_held: _Optional[int] = ..., reserved_tokens: _Optional[int] = ..., staging_bytes: _Optional[int] = ..., aliased_layers: _Optional[int] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ["sequence_id"]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ["errors", "free_pages", "page_bytes", "requests", "sequence", "sequences", "staging_bytes", "staging_used_bytes", "total_pages"]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    FREE_PAGES_FIELD_NUMBER: _ClassVar[int]
    PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STAGING_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGING_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PAGES_FIELD_NUMBER: _ClassVar[int]
    errors: int
    free_pages: int
    page_bytes: int
    requests: int
    sequence: SequenceStats
    sequences: int
    staging_bytes: int
    staging_used_bytes: int
    total_pages: int
    def __init__(self, total_pages: _Optional[int] = ..., free_pages: _Optional[int] = ..., page_bytes: _Optional[int] = ..., sequences: _Optional[int] = ..., staging_bytes: _Optional[int] = ..., staging_used_bytes: _Optional[int] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., sequence: _Optional[_Union[SequenceStats, _Mapping]] = ...) -> None: ...
