"""Conversion of a JSON Lines audit record to ``palisade.v1.AuditRecord`` for shipping."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from palisade.v1 import audit_pb2, policy_pb2

_DECISIONS = {
    "allow": policy_pb2.DECISION_ALLOW,
    "deny": policy_pb2.DECISION_DENY,
    "require_approval": policy_pb2.DECISION_REQUIRE_APPROVAL,
    "throttle": policy_pb2.DECISION_THROTTLE,
}


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
