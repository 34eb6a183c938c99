from kvd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
QUERY_MODE_GATHER: QueryMode
QUERY_MODE_INLINE: QueryMode
QUERY_MODE_METADATA: QueryMode
QUERY_MODE_PAGES: QueryMode
QUERY_MODE_UNSPECIFIED: QueryMode

class HeadView(_message.Message):
    __slots__ = ["aliased", "gather_key_offset", "gather_value_offset", "head", "keys", "layer", "log_weights", "num_tokens", "owner_layer", "page_ids", "pages", "position_runs", "positions", "values"]
    ALIASED_FIELD_NUMBER: _ClassVar[int]
    GATHER_KEY_OFFSET_FIELD_NUMBER: _ClassVar[int]
    GATHER_VALUE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    LOG_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    NUM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OWNER_LAYER_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    PAGE_IDS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    POSITION_RUNS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    aliased: bool
    gather_key_offset: int
    gather_value_offset: int
    head: int
    keys: bytes
    layer: int
    log_weights: bytes
    num_tokens: int
    owner_layer: int
    page_ids: bytes
    pages: _containers.RepeatedCompositeFieldContainer[PageRef]
    position_runs: bytes
    positions: bytes
    values: bytes
    def __init__(self, layer: _Optional[int] = ..., head: _Optional[int] = ..., num_tokens: _Optional[int] = ..., positions: _Optional[bytes] = ..., log_weights: _Optional[bytes] = ..., pages: _Optional[_Iterable[_Union[PageRef, _Mapping]]] = ..., keys: _Optional[bytes] = ..., values: _Optional[bytes] = ..., gather_key_offset: _Optional[int] = ..., gather_value_offset: _Optional[int] = ..., page_ids: _Optional[bytes] = ..., aliased: bool = ..., owner_layer: _Optional[int] = ..., position_runs: _Optional[bytes] = ...) -> None: ...

class PageRef(_message.Message):
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

class QueryRequest(_message.Message):
    __slots__ = ["layers", "mode", "page_refs", "position_runs", "sequence_id"]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    PAGE_REFS_FIELD_NUMBER: _ClassVar[int]
    POSITION_RUNS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[int]
    mode: QueryMode
    page_refs: bool
    position_runs: bool
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., mode: _Optional[_Union[QueryMode, str]] = ..., layers: _Optional[_Iterable[int]] = ..., page_refs: bool = ..., position_runs: bool = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ["dtype", "generation", "head_dim", "heads", "length", "page_tokens", "sequence_id"]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    dtype: _common_pb2.DType
    generation: int
    head_dim: int
    heads: _containers.RepeatedCompositeFieldContainer[HeadView]
    length: int
    page_tokens: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., generation: _Optional[int] = ..., length: _Optional[int] = ..., dtype: _Optional[_Union[_common_pb2.DType, str]] = ..., head_dim: _Optional[int] = ..., heads: _Optional[_Iterable[_Union[HeadView, _Mapping]]] = ..., page_tokens: _Optional[int] = ...) -> None: ...

class QueryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
