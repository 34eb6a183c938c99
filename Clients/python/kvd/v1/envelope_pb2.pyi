from kvd.v1 import common_pb2 as _common_pb2
from kvd.v1 import hello_pb2 as _hello_pb2
from kvd.v1 import sequence_pb2 as _sequence_pb2
from kvd.v1 import append_pb2 as _append_pb2
from kvd.v1 import query_pb2 as _query_pb2
from kvd.v1 import compact_pb2 as _compact_pb2
from kvd.v1 import stats_pb2 as _stats_pb2
from kvd.v1 import memory_pb2 as _memory_pb2
from kvd.v1 import prefix_pb2 as _prefix_pb2
from kvd.v1 import remote_pb2 as _remote_pb2
from kvd.v1 import admin_pb2 as _admin_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Error(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.ErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[_common_pb2.ErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ["append", "commit", "compact", "create_sequence", "evict", "fork", "hello", "keep_alive", "list_policies", "list_sequences", "lookup", "pin", "protocol_version", "query", "rank_layers", "release", "reload", "request_id", "reserve", "restore", "stage", "stats"]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    CREATE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVICT_FIELD_NUMBER: _ClassVar[int]
    FORK_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    LIST_POLICIES_FIELD_NUMBER: _ClassVar[int]
    LIST_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RANK_LAYERS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    append: _append_pb2.AppendRequest
    commit: _append_pb2.CommitRequest
    compact: _compact_pb2.CompactRequest
    create_sequence: _sequence_pb2.CreateSequenceRequest
    evict: _admin_pb2.EvictRequest
    fork: _prefix_pb2.ForkRequest
    hello: _hello_pb2.HelloRequest
    keep_alive: _memory_pb2.KeepAliveRequest
    list_policies: _admin_pb2.ListPoliciesRequest
    list_sequences: _admin_pb2.ListSequencesRequest
    lookup: _prefix_pb2.LookupRequest
    pin: _memory_pb2.PinRequest
    protocol_version: int
    query: _query_pb2.QueryRequest
    rank_layers: _compact_pb2.RankLayersRequest
    release: _sequence_pb2.ReleaseRequest
    reload: _admin_pb2.ReloadRequest
    request_id: int
    reserve: _append_pb2.ReserveRequest
    restore: _remote_pb2.RestoreRequest
    stage: _compact_pb2.StageRequest
    stats: _stats_pb2.StatsRequest
    def __init__(self, request_id: _Optional[int] = ..., protocol_version: _Optional[int] = ..., hello: _Optional[_Union[_hello_pb2.HelloRequest, _Mapping]] = ..., create_sequence: _Optional[_Union[_sequence_pb2.CreateSequenceRequest, _Mapping]] = ..., append: _Optional[_Union[_append_pb2.AppendRequest, _Mapping]] = ..., reserve: _Optional[_Union[_append_pb2.ReserveRequest, _Mapping]] = ..., commit: _Optional[_Union[_append_pb2.CommitRequest, _Mapping]] = ..., query: _Optional[_Union[_query_pb2.QueryRequest, _Mapping]] = ..., compact: _Optional[_Union[_compact_pb2.CompactRequest, _Mapping]] = ..., release: _Optional[_Union[_sequence_pb2.ReleaseRequest, _Mapping]] = ..., stats: _Optional[_Union[_stats_pb2.StatsRequest, _Mapping]] = ..., stage: _Optional[_Union[_compact_pb2.StageRequest, _Mapping]] = ..., rank_layers: _Optional[_Union[_compact_pb2.RankLayersRequest, _Mapping]] = ..., keep_alive: _Optional[_Union[_memory_pb2.KeepAliveRequest, _Mapping]] = ..., pin: _Optional[_Union[_memory_pb2.PinRequest, _Mapping]] = ..., lookup: _Optional[_Union[_prefix_pb2.LookupRequest, _Mapping]] = ..., fork: _Optional[_Union[_prefix_pb2.ForkRequest, _Mapping]] = ..., restore: _Optional[_Union[_remote_pb2.RestoreRequest, _Mapping]] = ..., list_sequences: _Optional[_Union[_admin_pb2.ListSequencesRequest, _Mapping]] = ..., list_policies: _Optional[_Union[_admin_pb2.ListPoliciesRequest, _Mapping]] = ..., reload: _Optional[_Union[_admin_pb2.ReloadRequest, _Mapping]] = ..., evict: _Optional[_Union[_admin_pb2.EvictRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ["append", "commit", "compact", "create_sequence", "error", "evict", "fork", "header", "hello", "keep_alive", "list_policies", "list_sequences", "lookup", "pin", "query", "rank_layers", "release", "reload", "reserve", "restore", "stage", "stats"]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    COMPACT_FIELD_NUMBER: _ClassVar[int]
    CREATE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EVICT_FIELD_NUMBER: _ClassVar[int]
    FORK_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    LIST_POLICIES_FIELD_NUMBER: _ClassVar[int]
    LIST_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    PIN_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    RANK_LAYERS_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    append: _append_pb2.AppendResponse
    commit: _append_pb2.CommitResponse
    compact: _compact_pb2.CompactResponse
    create_sequence: _sequence_pb2.CreateSequenceResponse
    error: Error
    evict: _admin_pb2.EvictResponse
    fork: _prefix_pb2.ForkResponse
    header: ResponseHeader
    hello: _hello_pb2.HelloResponse
    keep_alive: _memory_pb2.KeepAliveResponse
    list_policies: _admin_pb2.ListPoliciesResponse
    list_sequences: _admin_pb2.ListSequencesResponse
    lookup: _prefix_pb2.LookupResponse
    pin: _memory_pb2.PinResponse
    query: _query_pb2.QueryResponse
    rank_layers: _compact_pb2.RankLayersResponse
    release: _sequence_pb2.ReleaseResponse
    reload: _admin_pb2.ReloadResponse
    reserve: _append_pb2.ReserveResponse
    restore: _remote_pb2.RestoreResponse
    stage: _compact_pb2.StageResponse
    stats: _stats_pb2.StatsResponse
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., hello: _Optional[_Union[_hello_pb2.HelloResponse, _Mapping]] = ..., create_sequence: _Optional[_Union[_sequence_pb2.CreateSequenceResponse, _Mapping]] = ..., append: _Optional[_Union[_append_pb2.AppendResponse, _Mapping]] = ..., reserve: _Optional[_Union[_append_pb2.ReserveResponse, _Mapping]] = ..., commit: _Optional[_Union[_append_pb2.CommitResponse, _Mapping]] = ..., query: _Optional[_Union[_query_pb2.QueryResponse, _Mapping]] = ..., compact: _Optional[_Union[_compact_pb2.CompactResponse, _Mapping]] = ..., release: _Optional[_Union[_sequence_pb2.ReleaseResponse, _Mapping]] = ..., stats: _Optional[_Union[_stats_pb2.StatsResponse, _Mapping]] = ..., stage: _Optional[_Union[_compact_pb2.StageResponse, _Mapping]] = ..., rank_layers: _Optional[_Union[_compact_pb2.RankLayersResponse, _Mapping]] = ..., keep_alive: _Optional[_Union[_memory_pb2.KeepAliveResponse, _Mapping]] = ..., pin: _Optional[_Union[_memory_pb2.PinResponse, _Mapping]] = ..., lookup: _Optional[_Union[_prefix_pb2.LookupResponse, _Mapping]] = ..., fork: _Optional[_Union[_prefix_pb2.ForkResponse, _Mapping]] = ..., restore: _Optional[_Union[_remote_pb2.RestoreResponse, _Mapping]] = ..., list_sequences: _Optional[_Union[_admin_pb2.ListSequencesResponse, _Mapping]] = ..., list_policies: _Optional[_Union[_admin_pb2.ListPoliciesResponse, _Mapping]] = ..., reload: _Optional[_Union[_admin_pb2.ReloadResponse, _Mapping]] = ..., evict: _Optional[_Union[_admin_pb2.EvictResponse, _Mapping]] = ...) -> None: ...

class ResponseHeader(_message.Message):
    __slots__ = ["instance_id", "protocol_version", "request_id", "server_version"]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: int
    protocol_version: int
    request_id: int
    server_version: str
    def __init__(self, protocol_version: _Optional[int] = ..., server_version: _Optional[str] = ..., request_id: _Optional[int] = ..., instance_id: _Optional[int] = ...) -> None: ...
