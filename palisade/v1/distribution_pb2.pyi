import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from palisade.v1 import audit_pb2 as _audit_pb2
from palisade.v1 import bundle_pb2 as _bundle_pb2
from palisade.v1 import policy_pb2 as _policy_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLIENT_KIND_UNSPECIFIED: _ClassVar[ClientKind]
    CLIENT_KIND_SIDECAR: _ClassVar[ClientKind]
    CLIENT_KIND_NODE_AGENT: _ClassVar[ClientKind]
    CLIENT_KIND_CLI: _ClassVar[ClientKind]

class AuditRefusalReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_REFUSAL_UNSPECIFIED: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_MALFORMED: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_EDITED: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_UNKNOWN_KEY: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_BAD_SIGNATURE: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_BAD_START: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_GAP: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_CHAIN_BROKEN: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_CONFLICT: _ClassVar[AuditRefusalReason]
    AUDIT_REFUSAL_UNSIGNED: _ClassVar[AuditRefusalReason]
CLIENT_KIND_UNSPECIFIED: ClientKind
CLIENT_KIND_SIDECAR: ClientKind
CLIENT_KIND_NODE_AGENT: ClientKind
CLIENT_KIND_CLI: ClientKind
AUDIT_REFUSAL_UNSPECIFIED: AuditRefusalReason
AUDIT_REFUSAL_MALFORMED: AuditRefusalReason
AUDIT_REFUSAL_EDITED: AuditRefusalReason
AUDIT_REFUSAL_UNKNOWN_KEY: AuditRefusalReason
AUDIT_REFUSAL_BAD_SIGNATURE: AuditRefusalReason
AUDIT_REFUSAL_BAD_START: AuditRefusalReason
AUDIT_REFUSAL_GAP: AuditRefusalReason
AUDIT_REFUSAL_CHAIN_BROKEN: AuditRefusalReason
AUDIT_REFUSAL_CONFLICT: AuditRefusalReason
AUDIT_REFUSAL_UNSIGNED: AuditRefusalReason

class ClientIdentity(_message.Message):
    __slots__ = ("kind", "id", "node", "namespace", "pod", "tenant", "server", "version")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    kind: ClientKind
    id: str
    node: str
    namespace: str
    pod: str
    tenant: str
    server: str
    version: str
    def __init__(self, kind: _Optional[_Union[ClientKind, str]] = ..., id: _Optional[str] = ..., node: _Optional[str] = ..., namespace: _Optional[str] = ..., pod: _Optional[str] = ..., tenant: _Optional[str] = ..., server: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("revision", "digest")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    revision: int
    digest: str
    def __init__(self, revision: _Optional[int] = ..., digest: _Optional[str] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("revision", "digest", "error")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    revision: int
    digest: str
    error: str
    def __init__(self, revision: _Optional[int] = ..., digest: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time", "revision", "health", "counters", "summary")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    revision: int
    health: str
    counters: _containers.ScalarMap[str, float]
    summary: _struct_pb2.Struct
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., health: _Optional[str] = ..., counters: _Optional[_Mapping[str, float]] = ..., summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ApprovalRequest(_message.Message):
    __slots__ = ("approval_id", "call", "tenant", "rule_id", "reason", "call_digest", "approvers")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CALL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    call: _policy_pb2.CheckRequest
    tenant: str
    rule_id: str
    reason: str
    call_digest: str
    approvers: int
    def __init__(self, approval_id: _Optional[str] = ..., call: _Optional[_Union[_policy_pb2.CheckRequest, _Mapping]] = ..., tenant: _Optional[str] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., call_digest: _Optional[str] = ..., approvers: _Optional[int] = ...) -> None: ...

class ApprovalDecision(_message.Message):
    __slots__ = ("approval_id", "approved", "by", "comment", "expires", "call_digest", "signatures", "approvers")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    BY_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_FIELD_NUMBER: _ClassVar[int]
    CALL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIGNATURES_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    approved: bool
    by: str
    comment: str
    expires: _timestamp_pb2.Timestamp
    call_digest: str
    signatures: _containers.RepeatedCompositeFieldContainer[_bundle_pb2.BundleSignature]
    approvers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, approval_id: _Optional[str] = ..., approved: _Optional[bool] = ..., by: _Optional[str] = ..., comment: _Optional[str] = ..., expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., call_digest: _Optional[str] = ..., signatures: _Optional[_Iterable[_Union[_bundle_pb2.BundleSignature, _Mapping]]] = ..., approvers: _Optional[_Iterable[str]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("hello", "ack", "nack", "heartbeat", "approval_request")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    nack: Nack
    heartbeat: Heartbeat
    approval_request: ApprovalRequest
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., approval_request: _Optional[_Union[ApprovalRequest, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("identity", "current_revision", "current_digest")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CURRENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    identity: ClientIdentity
    current_revision: int
    current_digest: str
    def __init__(self, identity: _Optional[_Union[ClientIdentity, _Mapping]] = ..., current_revision: _Optional[int] = ..., current_digest: _Optional[str] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("bundle", "up_to_date", "approval")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    UP_TO_DATE_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    bundle: _bundle_pb2.SignedBundle
    up_to_date: Ack
    approval: ApprovalDecision
    def __init__(self, bundle: _Optional[_Union[_bundle_pb2.SignedBundle, _Mapping]] = ..., up_to_date: _Optional[_Union[Ack, _Mapping]] = ..., approval: _Optional[_Union[ApprovalDecision, _Mapping]] = ...) -> None: ...

class AuditBatch(_message.Message):
    __slots__ = ("identity", "records")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    identity: ClientIdentity
    records: _containers.RepeatedCompositeFieldContainer[_audit_pb2.AuditRecord]
    def __init__(self, identity: _Optional[_Union[ClientIdentity, _Mapping]] = ..., records: _Optional[_Iterable[_Union[_audit_pb2.AuditRecord, _Mapping]]] = ...) -> None: ...

class AuditBatchAck(_message.Message):
    __slots__ = ("stored_through_seq", "stored_count", "already_stored", "refused")
    STORED_THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    STORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STORED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    stored_through_seq: int
    stored_count: int
    already_stored: int
    refused: AuditRefusal
    def __init__(self, stored_through_seq: _Optional[int] = ..., stored_count: _Optional[int] = ..., already_stored: _Optional[int] = ..., refused: _Optional[_Union[AuditRefusal, _Mapping]] = ...) -> None: ...

class AuditRefusal(_message.Message):
    __slots__ = ("seq", "hash", "reason", "message")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hash: str
    reason: AuditRefusalReason
    message: str
    def __init__(self, seq: _Optional[int] = ..., hash: _Optional[str] = ..., reason: _Optional[_Union[AuditRefusalReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class AuditKey(_message.Message):
    __slots__ = ("key_id", "source", "proof")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    source: str
    proof: bytes
    def __init__(self, key_id: _Optional[str] = ..., source: _Optional[str] = ..., proof: _Optional[bytes] = ...) -> None: ...

class RegisterAuditKeyRequest(_message.Message):
    __slots__ = ("identity", "keys")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    identity: ClientIdentity
    keys: _containers.RepeatedCompositeFieldContainer[AuditKey]
    def __init__(self, identity: _Optional[_Union[ClientIdentity, _Mapping]] = ..., keys: _Optional[_Iterable[_Union[AuditKey, _Mapping]]] = ...) -> None: ...

class RegisterAuditKeyResponse(_message.Message):
    __slots__ = ("source", "key_ids")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    source: str
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, source: _Optional[str] = ..., key_ids: _Optional[_Iterable[str]] = ...) -> None: ...
