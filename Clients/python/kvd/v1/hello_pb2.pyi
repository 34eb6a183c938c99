from kvd.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ["admin_token", "client_name", "protocol_versions", "tenant", "token"]
    ADMIN_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    admin_token: str
    client_name: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[int]
    tenant: str
    token: str
    def __init__(self, protocol_versions: _Optional[_Iterable[int]] = ..., client_name: _Optional[str] = ..., tenant: _Optional[str] = ..., token: _Optional[str] = ..., admin_token: _Optional[str] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ["admin", "durable", "events_endpoint", "instance_id", "limits", "methods", "models", "policies", "protocol_version", "server_version", "shm", "supported_protocol_versions", "tenant", "tenants"]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHM_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    admin: bool
    durable: bool
    events_endpoint: str
    instance_id: int
    limits: Limits
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelLayout]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    protocol_version: int
    server_version: str
    shm: SharedMemoryInfo
    supported_protocol_versions: _containers.RepeatedScalarFieldContainer[int]
    tenant: str
    tenants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, protocol_version: _Optional[int] = ..., supported_protocol_versions: _Optional[_Iterable[int]] = ..., server_version: _Optional[str] = ..., shm: _Optional[_Union[SharedMemoryInfo, _Mapping]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelLayout, _Mapping]]] = ..., methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., tenant: _Optional[str] = ..., events_endpoint: _Optional[str] = ..., instance_id: _Optional[int] = ..., durable: bool = ..., admin: bool = ..., tenants: _Optional[_Iterable[str]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ["lease_ms", "max_message_bytes", "max_sequence_tokens", "max_sequences", "max_tokens_per_append", "orphan_grace_ms", "quota_pages", "quota_pinned_pages", "quota_sequences"]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_APPEND_FIELD_NUMBER: _ClassVar[int]
    ORPHAN_GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    QUOTA_PAGES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_PINNED_PAGES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    lease_ms: int
    max_message_bytes: int
    max_sequence_tokens: int
    max_sequences: int
    max_tokens_per_append: int
    orphan_grace_ms: int
    quota_pages: int
    quota_pinned_pages: int
    quota_sequences: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_tokens_per_append: _Optional[int] = ..., max_sequences: _Optional[int] = ..., max_sequence_tokens: _Optional[int] = ..., quota_pages: _Optional[int] = ..., quota_sequences: _Optional[int] = ..., lease_ms: _Optional[int] = ..., orphan_grace_ms: _Optional[int] = ..., quota_pinned_pages: _Optional[int] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ["description", "name", "needs_queries", "origin", "params"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NEEDS_QUERIES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    description: str
    name: str
    needs_queries: bool
    origin: str
    params: _containers.RepeatedCompositeFieldContainer[ParamInfo]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., params: _Optional[_Iterable[_Union[ParamInfo, _Mapping]]] = ..., needs_queries: bool = ..., origin: _Optional[str] = ...) -> None: ...

class ParamInfo(_message.Message):
    __slots__ = ["default_value", "description", "max_value", "min_value", "name", "type"]
    DEFAULT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    MIN_VALUE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    default_value: str
    description: str
    max_value: str
    min_value: str
    name: str
    type: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., default_value: _Optional[str] = ..., min_value: _Optional[str] = ..., max_value: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ["method", "name", "params"]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    method: str
    name: str
    params: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., method: _Optional[str] = ..., params: _Optional[_Iterable[str]] = ...) -> None: ...

class SharedMemoryInfo(_message.Message):
    __slots__ = ["arena_generation", "layout_version", "name", "page_bytes", "page_count", "pages_offset", "size_bytes", "staging_bytes", "staging_offset"]
    ARENA_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGES_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGING_BYTES_FIELD_NUMBER: _ClassVar[int]
    STAGING_OFFSET_FIELD_NUMBER: _ClassVar[int]
    arena_generation: int
    layout_version: int
    name: str
    page_bytes: int
    page_count: int
    pages_offset: int
    size_bytes: int
    staging_bytes: int
    staging_offset: int
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., page_bytes: _Optional[int] = ..., page_count: _Optional[int] = ..., pages_offset: _Optional[int] = ..., staging_offset: _Optional[int] = ..., staging_bytes: _Optional[int] = ..., layout_version: _Optional[int] = ..., arena_generation: _Optional[int] = ...) -> None: ...
