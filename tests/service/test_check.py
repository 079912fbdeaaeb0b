"""Check over a real Unix socket: decisions, audit, metrics, bad input, fail closed."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2

from palisade.audit import REDACTED, digest, verify_files
from palisade.v1 import policy_pb2

from .conftest import Served


def req(**kw: object) -> policy_pb2.CheckRequest:
    base: dict[str, object] = {
        "agent": "sre-agent-payments",
        "server": "kubernetes-mcp",
        "tool": "pods_log",
        "session": "s1",
        "request_id": "r-1",
    }
    base.update(kw)
    args = base.pop("args", None)
    r = policy_pb2.CheckRequest(**base)  # type: ignore[arg-type]
    if args is not None:
        r.arguments.update(args)
    return r


def audit_lines(s: Served) -> list[dict[str, object]]:
    return [json.loads(line) for line in s.audit_path.read_text().splitlines()]


def counter(s: Served, decision: str, rule: str, server: str = "", tool: str = "") -> float:
    value = s.metrics.registry.get_sample_value(
        "palisade_decisions_total",
        {"decision": decision, "rule": rule, "server": server, "tool": tool},
    )
    return value or 0.0


async def test_an_allowed_call_is_answered_audited_and_counted(served: Served) -> None:
    args = {"namespace": "payments", "replicas": 3, "kubeconfig": "apiVersion: v1 secret"}
    resp = await served.stub.Check(req(args=args))
    assert resp.decision == policy_pb2.DECISION_ALLOW
    assert (resp.rule_id, resp.reason, resp.bundle_revision) == ("allow-reads", "reads are fine", 3)
    assert (resp.tenant, resp.risk, resp.bundle_digest) == (
        "payments",
        policy_pb2.RISK_READ,
        "sha256:x",
    )
    [rec] = audit_lines(served)
    assert resp.audit_hash == rec["hash"]
    assert rec["decision"] == "allow" and rec["request_id"] == "r-1" and rec["tenant"] == "payments"
    assert rec["arguments"] == {"namespace": "payments", "replicas": 3, "kubeconfig": REDACTED}
    # the Struct's double 3.0 digests like the MCP JSON integer 3
    assert rec["arguments_digest"] == digest(args)
    assert counter(served, "allow", "allow-reads", "kubernetes-mcp", "pods_log") == 1
    hist = served.metrics.registry.get_sample_value("palisade_decision_duration_seconds_count")
    assert hist == 1


async def test_deny_throttle_and_explain_come_back_on_the_wire(served: Served) -> None:
    deny = await served.stub.Check(req(tool="resources_delete", explain=True))
    assert deny.decision == policy_pb2.DECISION_DENY and deny.risk == policy_pb2.RISK_DESTRUCTIVE
    assert [(t.rule_id, t.matched) for t in deny.explanation] == [("deny-delete", True)]
    slow = await served.stub.Check(req(tool="slow"))
    assert slow.decision == policy_pb2.DECISION_THROTTLE and slow.retry_after_ms == 251
    assert verify_files([served.audit_path], trusted=[served.signer.public]).ok


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"agent": ""}, "agent is required"),
        ({"server": "  "}, "server is required"),
        ({"tool": ""}, "tool is required"),
        ({"tool": "x" * 300}, "tool is longer than 256"),
        ({"agent": "a\nb"}, "agent contains control characters"),
        ({"server_declared_risk": 42}, "unknown Risk value 42"),
        ({"args": {"blob": "x" * 300_000}}, "more than the limit of 262144"),
        ({"labels": {"": "x"}}, "empty key"),
    ],
)
async def test_each_malformed_request_gets_invalid_argument_and_is_audited_as_a_deny(
    served: Served, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Check(req(**overrides))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")
    [rec] = audit_lines(served)
    assert (rec["decision"], rec["rule_id"], rec["kind"]) == (
        "deny",
        "invalid-request",
        "invalid-request",
    )
    assert message in str(rec["reason"])
    assert counter(served, "deny", "invalid-request") == 1
    ok = await served.stub.Check(req())  # the server still answers
    assert ok.decision == policy_pb2.DECISION_ALLOW


@pytest.mark.parametrize("levels", [32, 40, 200])
async def test_too_deep_arguments_are_refused_and_audited(served: Served, levels: int) -> None:
    inner: dict[str, object] = {"leaf": 1}
    for _ in range(levels):
        inner = {"d": inner}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Check(req(args=inner))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested deeper than" in (err.value.details() or "")
    assert audit_lines(served)[0]["rule_id"] == "invalid-request"
    assert (await served.stub.Check(req())).decision == policy_pb2.DECISION_ALLOW


async def test_arguments_at_the_depth_limit_are_accepted(served: Served) -> None:
    inner: dict[str, object] = {"leaf": 1}
    for _ in range(30):
        inner = {"d": inner}
    assert (await served.stub.Check(req(args=inner))).decision == policy_pb2.DECISION_ALLOW


async def test_nan_in_arguments_is_refused(served: Served) -> None:
    r = req()
    r.arguments.fields["x"].CopyFrom(struct_pb2.Value(number_value=float("nan")))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.Check(r)
    assert "NaN" in (err.value.details() or "")


async def test_garbage_bytes_get_a_status_and_the_server_stays_up(served: Served) -> None:
    raw = served.channel.unary_unary("/palisade.v1.PolicyService/Check")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\xff\xff\xff\xff not a protobuf")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid palisade.v1.CheckRequest" in (err.value.details() or "")
    assert audit_lines(served)[0]["kind"] == "invalid-request"
    assert (await served.stub.Check(req())).decision == policy_pb2.DECISION_ALLOW


async def test_an_engine_exception_is_a_deny_audited_and_leaks_nothing(served: Served) -> None:
    resp = await served.stub.Check(req(tool="boom"))
    assert resp.decision == policy_pb2.DECISION_DENY and resp.rule_id == "engine-error"
    assert "hunter2" not in resp.reason
    [rec] = audit_lines(served)
    assert rec["rule_id"] == "engine-error" and resp.audit_hash == rec["hash"]
    assert "hunter2" not in served.audit_path.read_text()
    assert (await served.stub.Check(req())).decision == policy_pb2.DECISION_ALLOW


async def test_no_bundle_loaded_denies_every_call(served: Served) -> None:
    served.engines.swap(None, reason="bundle b.yaml is invalid: rules[0].decision: bad")
    resp = await served.stub.Check(req())
    assert (resp.decision, resp.rule_id) == (policy_pb2.DECISION_DENY, "no-bundle")
    assert resp.reason == "bundle b.yaml is invalid: rules[0].decision: bad"
    assert audit_lines(served)[0]["rule_id"] == "no-bundle"


async def test_an_audit_failure_turns_the_answer_into_a_deny(served: Served) -> None:
    served.writer.close()  # the audit log is gone: nothing may be allowed unaudited
    resp = await served.stub.Check(req())
    assert (resp.decision, resp.rule_id, resp.audit_hash) == (
        policy_pb2.DECISION_DENY,
        "audit-unavailable",
        "",
    )
    failures = served.metrics.registry.get_sample_value("palisade_audit_write_failures_total")
    assert failures == 1
