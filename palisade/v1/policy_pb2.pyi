from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    DECISION_ALLOW: _ClassVar[Decision]
    DECISION_DENY: _ClassVar[Decision]
    DECISION_REQUIRE_APPROVAL: _ClassVar[Decision]
    DECISION_THROTTLE: _ClassVar[Decision]

class Risk(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RISK_UNSPECIFIED: _ClassVar[Risk]
    RISK_READ: _ClassVar[Risk]
    RISK_WRITE: _ClassVar[Risk]
    RISK_DESTRUCTIVE: _ClassVar[Risk]
    RISK_ADMIN: _ClassVar[Risk]
DECISION_UNSPECIFIED: Decision
DECISION_ALLOW: Decision
DECISION_DENY: Decision
DECISION_REQUIRE_APPROVAL: Decision
DECISION_THROTTLE: Decision
RISK_UNSPECIFIED: Risk
RISK_READ: Risk
RISK_WRITE: Risk
RISK_DESTRUCTIVE: Risk
RISK_ADMIN: Risk

class CheckRequest(_message.Message):
    __slots__ = ("agent", "on_behalf_of", "server", "server_version", "tool", "arguments", "session", "labels", "server_declared_risk", "dry_run", "explain", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SERVER_DECLARED_RISK_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent: str
    on_behalf_of: str
    server: str
    server_version: str
    tool: str
    arguments: _struct_pb2.Struct
    session: str
    labels: _containers.ScalarMap[str, str]
    server_declared_risk: Risk
    dry_run: bool
    explain: bool
    request_id: str
    def __init__(self, agent: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., server: _Optional[str] = ..., server_version: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., session: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., server_declared_risk: _Optional[_Union[Risk, str]] = ..., dry_run: _Optional[bool] = ..., explain: _Optional[bool] = ..., request_id: _Optional[str] = ...) -> None: ...

class RuleTrace(_message.Message):
    __slots__ = ("rule_id", "matched", "detail")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    matched: bool
    detail: str
    def __init__(self, rule_id: _Optional[str] = ..., matched: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class CheckResponse(_message.Message):
    __slots__ = ("decision", "rule_id", "reason", "bundle_revision", "bundle_digest", "approval_id", "retry_after_ms", "tenant", "risk", "explanation", "audit_hash")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_REVISION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    rule_id: str
    reason: str
    bundle_revision: int
    bundle_digest: str
    approval_id: str
    retry_after_ms: int
    tenant: str
    risk: Risk
    explanation: _containers.RepeatedCompositeFieldContainer[RuleTrace]
    audit_hash: str
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., bundle_revision: _Optional[int] = ..., bundle_digest: _Optional[str] = ..., approval_id: _Optional[str] = ..., retry_after_ms: _Optional[int] = ..., tenant: _Optional[str] = ..., risk: _Optional[_Union[Risk, str]] = ..., explanation: _Optional[_Iterable[_Union[RuleTrace, _Mapping]]] = ..., audit_hash: _Optional[str] = ...) -> None: ...
