from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ForkRequest(_message.Message):
    __slots__ = ["length", "new_sequence_id", "sequence_id"]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    NEW_SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    length: int
    new_sequence_id: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., length: _Optional[int] = ..., new_sequence_id: _Optional[int] = ...) -> None: ...

class ForkResponse(_message.Message):
    __slots__ = ["generation", "length", "sequence_id"]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    generation: int
    length: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., length: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ["model", "token_ids"]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    token_ids: bytes
    def __init__(self, model: _Optional[str] = ..., token_ids: _Optional[bytes] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ["page_tokens", "pages_per_head", "tokens"]
    PAGES_PER_HEAD_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    page_tokens: int
    pages_per_head: int
    tokens: int
    def __init__(self, tokens: _Optional[int] = ..., pages_per_head: _Optional[int] = ..., page_tokens: _Optional[int] = ...) -> None: ...

class PrefixStats(_message.Message):
    __slots__ = ["bytes_saved", "cached_blocks", "cached_pages", "enabled", "evicted_pages", "evictions", "hits", "misses", "pages_saved", "shared_pages", "unused_pages"]
    BYTES_SAVED_FIELD_NUMBER: _ClassVar[int]
    CACHED_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PAGES_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    EVICTED_PAGES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    PAGES_SAVED_FIELD_NUMBER: _ClassVar[int]
    SHARED_PAGES_FIELD_NUMBER: _ClassVar[int]
    UNUSED_PAGES_FIELD_NUMBER: _ClassVar[int]
    bytes_saved: int
    cached_blocks: int
    cached_pages: int
    enabled: bool
    evicted_pages: int
    evictions: int
    hits: int
    misses: int
    pages_saved: int
    shared_pages: int
    unused_pages: int
    def __init__(self, enabled: bool = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., cached_blocks: _Optional[int] = ..., cached_pages: _Optional[int] = ..., unused_pages: _Optional[int] = ..., shared_pages: _Optional[int] = ..., pages_saved: _Optional[int] = ..., bytes_saved: _Optional[int] = ..., evictions: _Optional[int] = ..., evicted_pages: _Optional[int] = ...) -> None: ...
