from kvd.v1 import hello_pb2 as _hello_pb2
from kvd.v1 import stats_pb2 as _stats_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvictRequest(_message.Message):
    __slots__ = ["sequence_id"]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    sequence_id: int
    def __init__(self, sequence_id: _Optional[int] = ...) -> None: ...

class EvictResponse(_message.Message):
    __slots__ = ["bytes_freed", "offloaded", "pages_freed", "sequence_id", "tokens_held"]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    OFFLOADED_FIELD_NUMBER: _ClassVar[int]
    PAGES_FREED_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_HELD_FIELD_NUMBER: _ClassVar[int]
    bytes_freed: int
    offloaded: bool
    pages_freed: int
    sequence_id: int
    tokens_held: int
    def __init__(self, sequence_id: _Optional[int] = ..., pages_freed: _Optional[int] = ..., bytes_freed: _Optional[int] = ..., offloaded: bool = ..., tokens_held: _Optional[int] = ...) -> None: ...

class ListPoliciesRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListPoliciesResponse(_message.Message):
    __slots__ = ["models", "policies", "rules"]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelPolicyInfo]
    policies: _containers.RepeatedCompositeFieldContainer[_hello_pb2.PolicyInfo]
    rules: _containers.RepeatedCompositeFieldContainer[RuleInfo]
    def __init__(self, policies: _Optional[_Iterable[_Union[_hello_pb2.PolicyInfo, _Mapping]]] = ..., rules: _Optional[_Iterable[_Union[RuleInfo, _Mapping]]] = ..., models: _Optional[_Iterable[_Union[ModelPolicyInfo, _Mapping]]] = ...) -> None: ...

class ListSequencesRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListSequencesResponse(_message.Message):
    __slots__ = ["sequences", "tenant"]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    sequences: _containers.RepeatedCompositeFieldContainer[_stats_pb2.SequenceStats]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ..., sequences: _Optional[_Iterable[_Union[_stats_pb2.SequenceStats, _Mapping]]] = ...) -> None: ...

class ModelPolicyInfo(_message.Message):
    __slots__ = ["default_policy", "model"]
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    default_policy: str
    model: str
    def __init__(self, model: _Optional[str] = ..., default_policy: _Optional[str] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ["policies", "rules"]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedScalarFieldContainer[str]
    rules: int
    def __init__(self, policies: _Optional[_Iterable[str]] = ..., rules: _Optional[int] = ...) -> None: ...

class RuleInfo(_message.Message):
    __slots__ = ["condition", "index", "policy"]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    condition: str
    index: int
    policy: str
    def __init__(self, index: _Optional[int] = ..., condition: _Optional[str] = ..., policy: _Optional[str] = ...) -> None: ...
