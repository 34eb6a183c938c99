from kvd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompactRequest(_message.Message):
    __slots__ = ["method", "params", "policy", "queries", "queries_shm", "sequence_id"]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    QUERIES_SHM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    method: str
    params: _containers.RepeatedCompositeFieldContainer[_common_pb2.Param]
    policy: str
    queries: _common_pb2.Tensor
    queries_shm: SharedTensor
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., method: _Optional[str] = ..., params: _Optional[_Iterable[_Union[_common_pb2.Param, _Mapping]]] = ..., policy: _Optional[str] = ..., queries: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., queries_shm: _Optional[_Union[SharedTensor, _Mapping]] = ...) -> None: ...

class CompactResponse(_message.Message):
    __slots__ = ["aliases", "budgets", "bytes_freed", "chosen_by", "elapsed_ns", "generation", "heads", "method", "pages_freed", "policy", "sequence_id"]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_BY_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_NS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    HEADS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PAGES_FREED_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    aliases: _containers.RepeatedCompositeFieldContainer[LayerAlias]
    budgets: _containers.RepeatedScalarFieldContainer[int]
    bytes_freed: int
    chosen_by: str
    elapsed_ns: int
    generation: int
    heads: _containers.RepeatedCompositeFieldContainer[HeadCount]
    method: str
    pages_freed: int
    policy: str
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., generation: _Optional[int] = ..., method: _Optional[str] = ..., heads: _Optional[_Iterable[_Union[HeadCount, _Mapping]]] = ..., pages_freed: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., elapsed_ns: _Optional[int] = ..., policy: _Optional[str] = ..., chosen_by: _Optional[str] = ..., budgets: _Optional[_Iterable[int]] = ..., aliases: _Optional[_Iterable[_Union[LayerAlias, _Mapping]]] = ...) -> None: ...

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

class LayerAlias(_message.Message):
    __slots__ = ["layer", "owner"]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    layer: int
    owner: int
    def __init__(self, layer: _Optional[int] = ..., owner: _Optional[int] = ...) -> None: ...

class LayerPair(_message.Message):
    __slots__ = ["distance", "layer", "other"]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    distance: float
    layer: int
    other: int
    def __init__(self, layer: _Optional[int] = ..., other: _Optional[int] = ..., distance: _Optional[float] = ...) -> None: ...

class RankLayersRequest(_message.Message):
    __slots__ = ["sequence_ids"]
    SEQUENCE_IDS_FIELD_NUMBER: _ClassVar[int]
    sequence_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, sequence_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RankLayersResponse(_message.Message):
    __slots__ = ["pairs"]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[LayerPair]
    def __init__(self, pairs: _Optional[_Iterable[_Union[LayerPair, _Mapping]]] = ...) -> None: ...

class SharedTensor(_message.Message):
    __slots__ = ["dtype", "offset", "shape"]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    dtype: _common_pb2.DType
    offset: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dtype: _Optional[_Union[_common_pb2.DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., offset: _Optional[int] = ...) -> None: ...

class StageRequest(_message.Message):
    __slots__ = ["bytes", "sequence_id"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class StageResponse(_message.Message):
    __slots__ = ["bytes", "offset"]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    offset: int
    def __init__(self, offset: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...
