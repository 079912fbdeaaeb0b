"""Check over a real Unix socket: decisions, audit, metrics, bad input, fail closed."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import struct_pb2

from palisade.audit import REDACTED, digest, verify_files
from palisade.v1 import policy_pb2

from .conftest import BrokenEngine, Served


def req(**kw: object) -> policy_pb2.CheckRequest:
    base: dict[str, object] = {
        "agent": "sre-agent-payments",
        "server": "kubernetes-mcp",
        "server_version": "1.2.0",
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
    """Decisions counted with these labels, whichever agent made the call."""
    want = {"decision": decision, "rule": rule, "server": server, "tool": tool}
    return sum(
        sample.value
        for metric in s.metrics.registry.collect()
        for sample in metric.samples
        if sample.name == "palisade_decisions_total"
        and all(sample.labels.get(k) == v for k, v in want.items())
    )


async def test_an_allowed_call_is_answered_audited_and_counted(served: Served) -> None:
    args = {
        "namespace": "payments",
        "replicas": 3,
        "manifest_token": "tok-123",
        "nested": {"password": "pw"},
    }
    resp = await served.stub.Check(req(tool="resources_create_or_update", args=args))
    assert resp.decision == policy_pb2.DECISION_ALLOW
    assert (resp.rule_id, resp.bundle_revision) == ("allow-writes-in-own-namespace", 1)
    assert (resp.tenant, resp.risk) == ("payments", policy_pb2.RISK_WRITE)
    assert resp.bundle_digest.startswith("sha256:")
    [rec] = audit_lines(served)
    assert resp.audit_hash == rec["hash"]
    assert rec["decision"] == "allow" and rec["request_id"] == "r-1" and rec["tenant"] == "payments"
    assert rec["arguments"] == {
        "namespace": "payments",
        "replicas": 3,
        "manifest_token": REDACTED,  # named by the registry's secretArguments
        "nested": {"password": REDACTED},  # a built-in secret name
    }
    # the Struct's double 3.0 digests like the MCP JSON integer 3
    assert rec["arguments_digest"] == digest(args)
    labels = (
        "allow",
        "allow-writes-in-own-namespace",
        "kubernetes-mcp",
        "resources_create_or_update",
    )
    assert counter(served, *labels) == 1
    hist = served.metrics.registry.get_sample_value("palisade_decision_duration_seconds_count")
    assert hist == 1


async def test_each_decision_type_comes_back_on_the_wire(served: Served) -> None:
    deny = await served.stub.Check(req(tool="resources_delete", explain=True))
    assert (deny.decision, deny.rule_id) == (policy_pb2.DECISION_DENY, "deny-destructive")
    assert deny.risk == policy_pb2.RISK_DESTRUCTIVE
    assert ("deny-destructive", True) in [(t.rule_id, t.matched) for t in deny.explanation]
    elsewhere = await served.stub.Check(
        req(tool="resources_create_or_update", args={"namespace": "kube-system"})
    )
    assert (elsewhere.decision, elsewhere.rule_id) == (policy_pb2.DECISION_DENY, "default")
    throttled = [await served.stub.Check(req(tool="pods_list")) for _ in range(3)][-1]
    assert throttled.decision == policy_pb2.DECISION_THROTTLE
    assert 0 < throttled.retry_after_ms <= 2000
    write = req(tool="resources_create_or_update", session="s9", args={"namespace": "payments"})
    answers = [await served.stub.Check(write) for _ in range(6)]
    assert [a.decision for a in answers[:5]] == [policy_pb2.DECISION_ALLOW] * 5
    assert answers[5].decision == policy_pb2.DECISION_REQUIRE_APPROVAL
    assert answers[5].approval_id.startswith("apr-")
    res = verify_files([served.audit_path], trusted=[served.signer.public])
    assert res.ok and res.records == 11
    approval = audit_lines(served)[-1]
    assert (approval["decision"], approval["approval_id"]) == (
        "require_approval",
        answers[5].approval_id,
    )


async def test_a_dry_run_consumes_no_budget_and_is_audited_as_such(served: Served) -> None:
    for _ in range(4):
        resp = await served.stub.Check(req(tool="pods_list", dry_run=True))
        assert resp.decision == policy_pb2.DECISION_ALLOW
    assert all(r["details"] == {"dry_run": True, "risk": "read"} for r in audit_lines(served))


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
    good = served.engines.get()
    served.engines.swap(BrokenEngine())
    resp = await served.stub.Check(req())
    assert resp.decision == policy_pb2.DECISION_DENY and resp.rule_id == "engine-error"
    assert "hunter2" not in resp.reason
    [rec] = audit_lines(served)
    assert rec["rule_id"] == "engine-error" and resp.audit_hash == rec["hash"]
    assert "hunter2" not in served.audit_path.read_text()
    served.engines.swap(good.engine, secret_names=good.secret_names)
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


async def test_a_decision_over_the_time_budget_is_denied_and_audited(served: Served) -> None:
    from palisade.policy.guard import Guard
    from palisade.service.policy_source import load_policy

    from .conftest import BUNDLE

    slow = load_policy(BUNDLE, guard=Guard(time_budget_s=0.0))  # every decision is "too slow"
    served.engines.swap(slow.engine)
    resp = await served.stub.Check(req())
    assert (resp.decision, resp.rule_id) == (policy_pb2.DECISION_DENY, "failure")
    assert "over the" in resp.reason and "budget" in resp.reason
    [rec] = audit_lines(served)
    assert (rec["decision"], rec["rule_id"]) == ("deny", "failure")


async def test_a_failing_secret_lookup_redacts_every_argument(served: Served) -> None:
    def broken(server: str, tool: str) -> list[str]:
        raise KeyError(tool)

    served.engines.swap(served.engines.get().engine, secret_names=broken)
    args = {"namespace": "payments", "blob": "maybe-secret"}
    resp = await served.stub.Check(req(args=args))
    assert resp.decision == policy_pb2.DECISION_ALLOW
    [rec] = audit_lines(served)
    assert rec["arguments"] == {"namespace": REDACTED, "blob": REDACTED}
    assert rec["arguments_digest"] == digest(args)
