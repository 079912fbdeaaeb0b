"""The engine answers every decision type, honours the registry, first match, defaults and risk."""

from __future__ import annotations

from palisade.bundle import load_bytes
from palisade.policy import Decision, Risk
from palisade.policy.digests import approval_id
from palisade.policy.engine import compile_bundle
from tests.policy.kit import bundle, call, spec_yaml

RULES = """\
rules:
  - {id: deny-destructive, decision: deny, match: {risk: [destructive, admin]}, reason: no deletes}
  - {id: approve-writes, decision: require_approval, match: {tools: [apply]}}
  - {id: slow-down, decision: throttle, match: {tools: [pods_list]}, retryAfterSeconds: 2.5}
  - {id: allow-reads, decision: allow, match: {risk: [read]}}
"""


def test_allow_carries_rule_reason_revision_digest_tenant_and_risk() -> None:
    engine = compile_bundle(bundle(RULES), revision=42)
    v = engine.decide(call("pods_log"))
    assert v.decision is Decision.ALLOW and v.allowed
    assert v.rule_id == "allow-reads"
    assert v.reason == "rule 'allow-reads' decided allow"
    assert v.bundle_revision == 42
    assert v.bundle_digest == engine.digest and v.bundle_digest.startswith("sha256:")
    assert v.tenant == "payments" and v.risk is Risk.READ


def test_deny_uses_the_rule_reason() -> None:
    v = compile_bundle(bundle(RULES)).decide(call("delete"))
    assert (v.decision, v.rule_id, v.reason) == (Decision.DENY, "deny-destructive", "no deletes")


def test_require_approval_gives_an_id_bound_to_the_exact_call() -> None:
    engine = compile_bundle(bundle(RULES))
    v = engine.decide(call("apply", arguments={"namespace": "payments"}))
    assert v.decision is Decision.REQUIRE_APPROVAL and v.rule_id == "approve-writes"
    assert v.approval_id == approval_id("sre", "k8s", "apply", {"namespace": "payments"}, "s1")
    other_args = engine.decide(call("apply", arguments={"namespace": "kube-system"}))
    other_session = engine.decide(call("apply", arguments={"namespace": "payments"}, session="s2"))
    again = engine.decide(call("apply", arguments={"namespace": "payments"}))
    assert len({v.approval_id, other_args.approval_id, other_session.approval_id}) == 3
    assert again.approval_id == v.approval_id


def test_throttle_rule_says_when_to_retry() -> None:
    v = compile_bundle(bundle(RULES)).decide(call("pods_list"))
    assert (v.decision, v.rule_id, v.retry_after_s) == (Decision.THROTTLE, "slow-down", 2.5)


def test_first_match_in_file_order_wins() -> None:
    b = bundle("""\
        rules:
          - {id: first, decision: deny, match: {tools: ["pods_*"]}}
          - {id: second, decision: allow, match: {tools: [pods_log]}}
        """)
    assert compile_bundle(b).decide(call("pods_log")).rule_id == "first"


def test_no_match_falls_to_the_default_which_is_deny_unless_stated() -> None:
    v = compile_bundle(bundle("rules: []\n")).decide(call("pods_log"))
    assert (v.decision, v.rule_id) == (Decision.DENY, "default")
    assert "defaultDecision is deny" in v.reason
    v = compile_bundle(bundle("defaultDecision: allow\n")).decide(call("pods_log"))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "default")


def test_unknown_server_tool_or_agent_is_denied_by_the_registry() -> None:
    engine = compile_bundle(bundle("defaultDecision: allow\n"))
    for c, words in [
        (call(server="nope"), "server 'nope' is not in the registry"),
        (call("rm_rf"), "tool 'rm_rf' is not registered for server 'k8s'"),
        (call(agent="mallory"), "agent 'mallory' is not declared"),
    ]:
        v = engine.decide(c)
        assert (v.decision, v.rule_id) == (Decision.DENY, "registry")
        assert words in v.reason


def test_server_versions_and_image_digests_are_checked() -> None:
    digest = "sha256:" + "a" * 64
    text = spec_yaml("defaultDecision: allow\n").replace(
        "    - name: k8s\n",
        f'    - name: k8s\n      versions: ["1.*"]\n      images: ["{digest}"]\n',
    )
    engine = compile_bundle(load_bytes(text, "v.yaml"))
    assert engine.decide(call(server_version="1.4.2")).allowed
    assert engine.decide(call(server_version=digest)).allowed
    for bad in ["2.0.0", "", "sha256:" + "b" * 64]:
        v = engine.decide(call(server_version=bad))
        assert (v.decision, v.rule_id) == (Decision.DENY, "registry"), bad
    assert (
        "version '2.0.0' is not an approved version or image"
        in engine.decide(call(server_version="2.0.0")).reason
    )


def test_risk_comes_from_the_registry_and_never_from_the_server_when_registered() -> None:
    b = bundle("rules:\n  - {id: reads, decision: allow, match: {risk: [read]}}\n")
    engine = compile_bundle(b)
    # The registry says delete is destructive; a server claiming "read" changes nothing.
    assert not engine.decide(call("delete", server_declared_risk=Risk.READ)).allowed


def test_server_declared_risk_is_used_only_when_the_registry_has_none() -> None:
    b = bundle("rules:\n  - {id: reads, decision: allow, match: {risk: [read]}}\n")
    engine = compile_bundle(b)
    v = engine.decide(call("mystery", server_declared_risk=Risk.READ))
    assert (v.decision, v.rule_id, v.risk) == (Decision.ALLOW, "reads", Risk.READ)
    v = engine.decide(call("mystery"))
    assert (v.decision, v.rule_id, v.risk) == (Decision.DENY, "default", None)


def test_agent_tenant_and_label_matches() -> None:
    b = bundle("""\
        rules:
          - {id: prod-only, decision: deny, match: {labels: {env: "prod*"}}}
          - {id: payments, decision: allow, match: {tenants: [payments]}}
          - {id: other, decision: require_approval, match: {agents: ["oth*"]}}
        """)
    engine = compile_bundle(b)
    assert engine.decide(call(labels={"env": "production"})).rule_id == "prod-only"
    assert engine.decide(call(labels={"env": "dev"})).rule_id == "payments"
    assert engine.decide(call(agent="other")).rule_id == "other"


def test_explain_traces_each_rule_up_to_the_one_that_decided() -> None:
    b = bundle("""\
        rules:
          - {id: r-server, decision: deny, match: {tools: [apply]}}
          - {id: r-risk, decision: deny, match: {risk: [write]}}
          - {id: r-agent, decision: deny, match: {agents: [other]}}
          - {id: r-when, decision: deny, when: "has(args.force)"}
          - {id: r-hit, decision: allow, match: {tools: ["pods_*"]}}
          - {id: r-after, decision: deny}
        """)
    v = compile_bundle(b).decide(call("pods_log", arguments={}), explain=True)
    assert v.rule_id == "r-hit"
    assert [(t.rule_id, t.matched) for t in v.explanation] == [
        ("r-server", False),
        ("r-risk", False),
        ("r-agent", False),
        ("r-when", False),
        ("r-hit", True),
    ]
    details = [t.detail for t in v.explanation]
    assert details[0] == "tool 'pods_log' does not match ['apply']"
    assert details[1] == "risk 'read' is not in ['write']"
    assert details[2] == "agent 'sre' does not match ['other']"
    assert details[3] == "'when' is false: has(args.force)"


def test_without_explain_there_is_no_trace() -> None:
    assert compile_bundle(bundle("rules: []\n")).decide(call()).explanation == ()


def test_lookups_for_adapters_find_tools_and_identities() -> None:
    from pathlib import Path

    from palisade.bundle import load_file

    engine = compile_bundle(
        load_file(Path(__file__).parents[2] / "examples" / "payments-bundle.yaml")
    )
    tool = engine.tool("kubernetes-mcp", "pods_log")
    assert tool is not None and tool.untrusted_output
    assert engine.tool("kubernetes-mcp", "nope") is None
    a = engine.identify(issuer="https://issuer.example", subject="sre-bot")
    assert a is not None and a.id == "sre-agent-payments"
    a = engine.identify(service_account="search/indexer")
    assert a is not None and a.id == "search-indexer"
    assert engine.identify(issuer="https://issuer.example", subject="someone") is None


def test_registry_denials_still_name_the_agents_tenant() -> None:
    v = compile_bundle(bundle()).decide(call("rm_rf"))
    assert (v.rule_id, v.tenant) == ("registry", "payments")
