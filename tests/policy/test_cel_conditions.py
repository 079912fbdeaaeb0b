"""``when`` conditions in CEL: over args, agent and call; errors go to the failure mode."""

from __future__ import annotations

from palisade.policy import Decision
from palisade.policy.engine import compile_bundle
from tests.policy.kit import bundle, call

OWN_NS = """\
rules:
  - id: own-namespace
    decision: allow
    match: {tools: [apply]}
    when: "args.namespace in agent.namespaces"
  - {id: elsewhere, decision: deny, match: {tools: [apply]}}
"""


def test_condition_over_args_and_agent_allows_only_the_agents_namespace() -> None:
    engine = compile_bundle(bundle(OWN_NS))
    v = engine.decide(call("apply", arguments={"namespace": "payments"}))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "own-namespace")
    v = engine.decide(call("apply", arguments={"namespace": "kube-system"}))
    assert (v.decision, v.rule_id) == (Decision.DENY, "elsewhere")
    v = engine.decide(call("apply", agent="other", arguments={"namespace": "payments"}))
    assert (v.decision, v.rule_id) == (Decision.DENY, "elsewhere")


def test_condition_over_call_fields_and_nested_arguments() -> None:
    b = bundle("""\
        rules:
          - id: big-replicas
            decision: require_approval
            when: "call.tool == 'apply' && args.spec.replicas > 10"
          - id: on-behalf
            decision: allow
            when: "call.on_behalf_of.endsWith('@example.com') && call.risk == 'write'"
        """)
    engine = compile_bundle(b)
    big = call("apply", arguments={"spec": {"replicas": 50}})
    assert engine.decide(big).rule_id == "big-replicas"
    human = call("apply", arguments={"spec": {"replicas": 1}}, on_behalf_of="ana@example.com")
    assert engine.decide(human).rule_id == "on-behalf"
    assert engine.decide(call("apply", arguments={"spec": {"replicas": 1}})).rule_id == "default"


def test_a_condition_that_fails_at_run_time_denies_under_failure_mode_closed() -> None:
    engine = compile_bundle(bundle(OWN_NS))
    v = engine.decide(call("apply", arguments={}))  # no args.namespace
    assert (v.decision, v.rule_id) == (Decision.DENY, "failure")
    assert "rule 'own-namespace'" in v.reason and "failureMode is closed" in v.reason


def test_a_condition_that_fails_at_run_time_allows_under_failure_mode_open() -> None:
    engine = compile_bundle(bundle("failureMode: open\n" + OWN_NS))
    v = engine.decide(call("apply", arguments={}))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "failure")
    assert "failureMode is open" in v.reason


def test_a_condition_that_is_not_a_boolean_is_a_failure() -> None:
    b = bundle("rules:\n  - {id: r, decision: allow, when: 'args.count + 1'}\n")
    v = compile_bundle(b).decide(call(arguments={"count": 1}))
    assert (v.decision, v.rule_id) == (Decision.DENY, "failure")
    assert "not a boolean" in v.reason


def test_has_guards_make_missing_arguments_a_plain_no_match() -> None:
    b = bundle("""\
        rules:
          - {id: r, decision: allow, when: "has(args.namespace) && args.namespace == 'payments'"}
        """)
    v = compile_bundle(b).decide(call(arguments={}))
    assert (v.decision, v.rule_id) == (Decision.DENY, "default")


def test_arguments_never_leak_into_the_reason() -> None:
    engine = compile_bundle(bundle(OWN_NS))
    v = engine.decide(call("apply", arguments={"token": "s3cr3t-value"}))
    assert "s3cr3t-value" not in v.reason


def test_a_failing_condition_explains_itself_without_echoing_argument_values() -> None:
    b = bundle('rules:\n  - {id: r, decision: allow, when: "args.token + 1 == 2"}\n')
    v = compile_bundle(b).decide(call(arguments={"token": "hunter2-secret"}), explain=True)
    assert (v.decision, v.rule_id) == (Decision.DENY, "failure")
    assert "cannot combine" in v.reason
    assert "hunter2" not in v.reason and all("hunter2" not in t.detail for t in v.explanation)
    v = compile_bundle(bundle(OWN_NS)).decide(call("apply", arguments={}))
    assert "a field it reads is missing; guard it with has()" in v.reason


def test_a_non_boolean_condition_does_not_echo_its_value_in_the_trace() -> None:
    b = bundle("rules:\n  - {id: r, decision: allow, when: args.token}\n")
    v = compile_bundle(b).decide(call(arguments={"token": "hunter2-secret"}), explain=True)
    assert v.rule_id == "failure"
    assert [t.detail for t in v.explanation] == ["'when' gave a str, not a boolean"]
