"""Pure conversion between the wire (``palisade.v1``) and the engine's plain types.

:func:`call_from_request` bounds and validates a ``CheckRequest`` and raises
:class:`BadRequest` with a message a person can act on; the servicer turns
that into ``INVALID_ARGUMENT``. :func:`response_from_verdict` is the way back.
Numbers in ``google.protobuf.Struct`` are doubles; integral ones become ints
(as in the MCP JSON the sidecar sees), so CEL conditions and argument
digests agree on both paths.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from palisade.policy.types import Call, Decision, Risk, Verdict
from palisade.v1 import policy_pb2

_RISKS: dict[int, Risk | None] = {
    policy_pb2.RISK_UNSPECIFIED: None,
    policy_pb2.RISK_READ: Risk.READ,
    policy_pb2.RISK_WRITE: Risk.WRITE,
    policy_pb2.RISK_DESTRUCTIVE: Risk.DESTRUCTIVE,
    policy_pb2.RISK_ADMIN: Risk.ADMIN,
}
_RISK_WIRE: dict[Risk, policy_pb2.Risk] = {
    Risk.READ: policy_pb2.RISK_READ,
    Risk.WRITE: policy_pb2.RISK_WRITE,
    Risk.DESTRUCTIVE: policy_pb2.RISK_DESTRUCTIVE,
    Risk.ADMIN: policy_pb2.RISK_ADMIN,
}
DECISION_WIRE: dict[Decision, policy_pb2.Decision] = {
    Decision.ALLOW: policy_pb2.DECISION_ALLOW,
    Decision.DENY: policy_pb2.DECISION_DENY,
    Decision.REQUIRE_APPROVAL: policy_pb2.DECISION_REQUIRE_APPROVAL,
    Decision.THROTTLE: policy_pb2.DECISION_THROTTLE,
}
_MAX_EXACT = 2**53
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one request; anything beyond is refused before the engine sees it."""

    #: Serialized size of ``arguments`` in bytes.
    max_argument_bytes: int = 256 * 1024
    #: Nesting depth of ``arguments`` (the top-level object is depth 1).
    max_argument_depth: int = 32
    #: Length of agent, server, tool, session and other identifiers.
    max_name_length: int = 256
    #: Number of labels, and length of each key and value.
    max_labels: int = 64


class BadRequest(ValueError):
    """The request is malformed; ``str()`` is the message for the caller."""


def _to_python(value: Any, depth: int, limit: int, path: str) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        n = value.number_value
        if not math.isfinite(n):
            raise BadRequest(f"arguments{path}: NaN and infinity are not allowed")
        return int(n) if n.is_integer() and -_MAX_EXACT <= n <= _MAX_EXACT else n
    if kind == "bool_value":
        return value.bool_value
    if kind == "null_value" or kind is None:
        return None
    if depth >= limit:
        raise BadRequest(f"arguments nested deeper than {limit} levels (at arguments{path})")
    if kind == "struct_value":
        return _struct(value.struct_value, depth + 1, limit, path)
    return [
        _to_python(v, depth + 1, limit, f"{path}[{i}]")
        for i, v in enumerate(value.list_value.values)
    ]


def _struct(struct: Any, depth: int, limit: int, path: str) -> dict[str, Any]:
    return {k: _to_python(v, depth, limit, f"{path}.{k}") for k, v in struct.fields.items()}


def _name(req: policy_pb2.CheckRequest, field: str, limits: Limits, required: bool) -> str:
    value: str = getattr(req, field)
    if required and not value.strip():
        raise BadRequest(f"{field} is required and must not be empty")
    if len(value) > limits.max_name_length:
        raise BadRequest(f"{field} is longer than {limits.max_name_length} characters")
    if _CONTROL.search(value):
        raise BadRequest(f"{field} contains control characters")
    return value


DEFAULT_LIMITS = Limits()


def call_from_request(req: policy_pb2.CheckRequest, limits: Limits = DEFAULT_LIMITS) -> Call:
    """A validated :class:`Call`; raises :class:`BadRequest` naming the first problem."""
    agent = _name(req, "agent", limits, True)
    server = _name(req, "server", limits, True)
    tool = _name(req, "tool", limits, True)
    session = _name(req, "session", limits, False)
    on_behalf_of = _name(req, "on_behalf_of", limits, False)
    server_version = _name(req, "server_version", limits, False)
    request_id = _name(req, "request_id", limits, False)
    if req.server_declared_risk not in _RISKS:
        raise BadRequest(f"server_declared_risk: unknown Risk value {req.server_declared_risk}")
    size = req.arguments.ByteSize()
    if size > limits.max_argument_bytes:
        raise BadRequest(
            f"arguments are {size} bytes, more than the limit of {limits.max_argument_bytes}"
        )
    if len(req.labels) > limits.max_labels:
        raise BadRequest(f"more than {limits.max_labels} labels")
    for key, value in req.labels.items():
        if not key or len(key) > limits.max_name_length or len(value) > limits.max_name_length:
            raise BadRequest(f"label {key[:40]!r}: empty key, or key or value too long")
    arguments = _struct(req.arguments, 1, limits.max_argument_depth, "")
    return Call(
        agent=agent,
        server=server,
        tool=tool,
        arguments=arguments,
        session=session,
        on_behalf_of=on_behalf_of,
        server_version=server_version,
        labels=dict(req.labels),
        server_declared_risk=_RISKS[req.server_declared_risk],
        request_id=request_id,
    )


def response_from_verdict(verdict: Verdict, *, audit_hash: str = "") -> policy_pb2.CheckResponse:
    resp = policy_pb2.CheckResponse(
        decision=DECISION_WIRE.get(verdict.decision, policy_pb2.DECISION_DENY),
        rule_id=verdict.rule_id,
        reason=verdict.reason,
        bundle_revision=verdict.bundle_revision,
        bundle_digest=verdict.bundle_digest,
        approval_id=verdict.approval_id,
        retry_after_ms=max(0, math.ceil(verdict.retry_after_s * 1000)),
        tenant=verdict.tenant,
        risk=_RISK_WIRE[verdict.risk] if verdict.risk else policy_pb2.RISK_UNSPECIFIED,
        audit_hash=audit_hash,
    )
    for trace in verdict.explanation:
        resp.explanation.add(rule_id=trace.rule_id, matched=trace.matched, detail=trace.detail)
    return resp
