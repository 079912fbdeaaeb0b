import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from palisade.v1 import policy_pb2 as _policy_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRecord(_message.Message):
    __slots__ = ("seq", "time", "source", "agent", "tenant", "on_behalf_of", "server", "tool", "session", "arguments_digest", "arguments", "decision", "rule_id", "reason", "bundle_revision", "latency_ns", "request_id", "dev_identity", "approval_id", "kind", "details", "prev_hash", "hash", "key_id", "signature")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ON_BEHALF_OF_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_REVISION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_NS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEV_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: _timestamp_pb2.Timestamp
    source: str
    agent: str
    tenant: str
    on_behalf_of: str
    server: str
    tool: str
    session: str
    arguments_digest: str
    arguments: _struct_pb2.Struct
    decision: _policy_pb2.Decision
    rule_id: str
    reason: str
    bundle_revision: int
    latency_ns: int
    request_id: str
    dev_identity: bool
    approval_id: str
    kind: str
    details: _struct_pb2.Struct
    prev_hash: str
    hash: str
    key_id: str
    signature: bytes
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ..., agent: _Optional[str] = ..., tenant: _Optional[str] = ..., on_behalf_of: _Optional[str] = ..., server: _Optional[str] = ..., tool: _Optional[str] = ..., session: _Optional[str] = ..., arguments_digest: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., decision: _Optional[_Union[_policy_pb2.Decision, str]] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., bundle_revision: _Optional[int] = ..., latency_ns: _Optional[int] = ..., request_id: _Optional[str] = ..., dev_identity: _Optional[bool] = ..., approval_id: _Optional[str] = ..., kind: _Optional[str] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., key_id: _Optional[str] = ..., signature: _Optional[bytes] = ...) -> None: ...
