from kvd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompactRequest(_message.Message):
    __slots__ = ["method", "params", "sequence_id"]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    method: str
    params: _containers.RepeatedCompositeFieldContainer[_common_pb2.Param]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., method: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_common_pb2.Param, _Mapping]]] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ["bytes_freed", "elapsed_ns", "generation", "heads", "method", "pages_freed", "sequence_id"]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_NS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGES_FREED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    elapsed_ns: int
    generation: int
    heads: _containers.RepeatedCompositeFieldContainer[HeadCount]
    method: str
    pages_freed: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., generation: _Optional[int] = ..., method: _Optional[str] = ..., heads: _Optional[_Iterable[_Union[HeadCount, _Mapping]]] = ..., pages_freed: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., elapsed_ns: _Optional[int] = ...) -> None: ...

class HeadCount(_message.Message):
    __slots__ = ["before", "head", "kept", "layer"]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    before: int
    head: int
    kept: int
    layer: int
    def __init__(self, layer: _Optional[int] = ..., head: _Optional[int] = ..., before: _Optional[int] = ..., kept: _Optional[int] = ...) -> None: ...
