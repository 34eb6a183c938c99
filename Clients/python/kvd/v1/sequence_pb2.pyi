from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSequenceRequest(_message.Message):
    __slots__ = ["adopt_token_ids", "model", "pinned", "sequence_id", "tenant"]
    ADOPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    adopt_token_ids: bytes
    model: str
    pinned: bool
    sequence_id: int
    tenant: str
    def __init__(self, model: _Optional[str] = ..., sequence_id: _Optional[int] = ..., tenant: _Optional[str] = ..., pinned: bool = ..., adopt_token_ids: _Optional[bytes] = ...) -> None: ...

class CreateSequenceResponse(_message.Message):
    __slots__ = ["adopted_tokens", "generation", "sequence_id"]
    ADOPTED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    adopted_tokens: int
    generation: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., generation: _Optional[int] = ..., adopted_tokens: _Optional[int] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ["sequence_id"]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ["bytes_freed", "pages_freed"]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    PAGES_FREED_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    pages_freed: int
    def __init__(self, pages_freed: _Optional[int] = ..., bytes_freed: _Optional[int] = ...) -> None: ...
