"""Conversion between a JSON Lines audit record and ``palisade.v1.AuditRecord``.

:func:`to_proto` is what a client ships; :func:`from_proto` gives back the record
as the writer wrote it (same fields, same values, so the same chain hash), which
is how the distributor verifies what it receives and serves it for
``palisade audit verify --distributor``. The round trip is exact for records
the writer makes: times have microseconds, numbers in ``arguments`` and
``details`` are canonicalised (integral doubles are written as integers).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

from palisade.audit import canonical
from palisade.v1 import audit_pb2, policy_pb2

_DECISIONS = {
    "allow": policy_pb2.DECISION_ALLOW,
    "deny": policy_pb2.DECISION_DENY,
    "require_approval": policy_pb2.DECISION_REQUIRE_APPROVAL,
    "throttle": policy_pb2.DECISION_THROTTLE,
}
_DECISION_NAMES = {v: k for k, v in _DECISIONS.items()}


def to_proto(record: Mapping[str, Any]) -> audit_pb2.AuditRecord:
    """The same record as a protobuf message (numbers in Struct fields become doubles)."""
    ts = timestamp_pb2.Timestamp()
    if record.get("time"):
        ts.FromDatetime(datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")))
    args = struct_pb2.Struct()
    args.update(dict(record.get("arguments") or {}))
    details = struct_pb2.Struct()
    details.update(dict(record.get("details") or {}))
    return audit_pb2.AuditRecord(
        seq=int(record["seq"]),
        time=ts,
        source=str(record.get("source", "")),
        agent=str(record.get("agent", "")),
        tenant=str(record.get("tenant", "")),
        on_behalf_of=str(record.get("on_behalf_of", "")),
        server=str(record.get("server", "")),
        tool=str(record.get("tool", "")),
        session=str(record.get("session", "")),
        arguments_digest=str(record.get("arguments_digest", "")),
        arguments=args,
        decision=_DECISIONS.get(str(record.get("decision", "")), policy_pb2.DECISION_UNSPECIFIED),
        rule_id=str(record.get("rule_id", "")),
        reason=str(record.get("reason", "")),
        bundle_revision=int(record.get("bundle_revision", 0)),
        latency_ns=int(record.get("latency_ns", 0)),
        request_id=str(record.get("request_id", "")),
        dev_identity=bool(record.get("dev_identity", False)),
        approval_id=str(record.get("approval_id", "")),
        kind=str(record.get("kind", "")),
        details=details,
        prev_hash=str(record.get("prev_hash", "")),
        hash=str(record.get("hash", "")),
        key_id=str(record.get("key_id", "")),
        signature=base64.b64decode(str(record.get("signature", ""))),
    )


def _time(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    whole = datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{ts.nanos // 1000:06d}Z"


def _struct(value: struct_pb2.Struct) -> Any:
    return canonical.normalize(json_format.MessageToDict(value))


def from_proto(msg: audit_pb2.AuditRecord) -> dict[str, Any]:
    """The record as the writer wrote it (the inverse of :func:`to_proto`)."""
    return {
        "time": _time(msg.time),
        "source": msg.source,
        "agent": msg.agent,
        "tenant": msg.tenant,
        "on_behalf_of": msg.on_behalf_of,
        "server": msg.server,
        "tool": msg.tool,
        "session": msg.session,
        "arguments_digest": msg.arguments_digest,
        "arguments": _struct(msg.arguments),
        "decision": _DECISION_NAMES.get(msg.decision, ""),
        "rule_id": msg.rule_id,
        "reason": msg.reason,
        "bundle_revision": msg.bundle_revision,
        "latency_ns": msg.latency_ns,
        "request_id": msg.request_id,
        "dev_identity": msg.dev_identity,
        "approval_id": msg.approval_id,
        "kind": msg.kind,
        "details": _struct(msg.details),
        "seq": msg.seq,
        "prev_hash": msg.prev_hash,
        "key_id": msg.key_id,
        "hash": msg.hash,
        "signature": base64.b64encode(msg.signature).decode(),
    }
