from kvd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AppendRequest(_message.Message):
    __slots__ = ["keys", "sequence_id", "token_ids", "values"]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    keys: _common_pb2.Tensor
    sequence_id: int
    token_ids: bytes
    values: _common_pb2.Tensor
    def __init__(self, sequence_id: _Optional[int] = ..., keys: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., values: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., token_ids: _Optional[bytes] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ["first_position", "generation", "length"]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    first_position: int
    generation: int
    length: int
    def __init__(self, length: _Optional[int] = ..., first_position: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ["abort", "keep_reserved", "num_tokens", "reservation_id", "sequence_id", "token_ids"]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    KEEP_RESERVED_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    abort: bool
    keep_reserved: bool
    num_tokens: int
    reservation_id: int
    sequence_id: int
    token_ids: bytes
    def __init__(self, sequence_id: _Optional[int] = ..., reservation_id: _Optional[int] = ..., num_tokens: _Optional[int] = ..., abort: bool = ..., token_ids: _Optional[bytes] = ..., keep_reserved: bool = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ["first_position", "generation", "length", "reserved_remaining"]
    FIRST_POSITION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    RESERVED_REMAINING_FIELD_NUMBER: _ClassVar[int]
    first_position: int
    generation: int
    length: int
    reserved_remaining: int
    def __init__(self, length: _Optional[int] = ..., first_position: _Optional[int] = ..., generation: _Optional[int] = ..., reserved_remaining: _Optional[int] = ...) -> None: ...

class HeadSlots(_message.Message):
    __slots__ = ["aliased", "first_slot", "head", "layer", "page_ids", "slots"]
    ALIASED_FIELD_NUMBER: _ClassVar[int]
    FIRST_SLOT_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    PAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    aliased: bool
    first_slot: int
    head: int
    layer: int
    page_ids: bytes
    slots: _containers.RepeatedCompositeFieldContainer[Slot]
    def __init__(self, layer: _Optional[int] = ..., head: _Optional[int] = ..., slots: _Optional[_Iterable[_Union[Slot, _Mapping]]] = ..., first_slot: _Optional[int] = ..., page_ids: _Optional[bytes] = ..., aliased: bool = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ["num_tokens", "sequence_id", "slots"]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    num_tokens: int
    sequence_id: int
    slots: bool
    def __init__(self, sequence_id: _Optional[int] = ..., num_tokens: _Optional[int] = ..., slots: bool = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ["heads", "num_tokens", "page_tokens", "reservation_id"]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    heads: _containers.RepeatedCompositeFieldContainer[HeadSlots]
    num_tokens: int
    page_tokens: int
    reservation_id: int
    def __init__(self, reservation_id: _Optional[int] = ..., num_tokens: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[HeadSlots, _Mapping]]] = ..., page_tokens: _Optional[int] = ...) -> None: ...

class Slot(_message.Message):
    __slots__ = ["count", "key_offset", "page", "value_offset"]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    KEY_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    VALUE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    count: int
    key_offset: int
    page: int
    value_offset: int
    def __init__(self, page: _Optional[int] = ..., key_offset: _Optional[int] = ..., value_offset: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
