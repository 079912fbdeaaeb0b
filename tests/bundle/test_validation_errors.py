"""Bad bundles are refused with file:line:col, the field path, and a message a person can act on."""

from __future__ import annotations

import pytest

from palisade.bundle import BundleValidationError, load_bytes
from tests.policy.kit import BASE, spec_yaml


def issues_of(text: str) -> list[str]:
    """The issues as printed, less their code (which each must have)."""
    with pytest.raises(BundleValidationError) as exc:
        load_bytes(text, "bad.yaml")
    out = []
    for issue in exc.value.issues:
        shown, tail = str(issue), f" [{issue.code}]"
        assert issue.code and shown.endswith(tail), shown
        out.append(shown[: -len(tail)])
    return out


def only_issue(text: str) -> str:
    found = issues_of(text)
    assert len(found) == 1, found
    return found[0]


def line_of(text: str, needle: str) -> int:
    for n, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return n
    raise AssertionError(needle)


def test_missing_api_version_is_named() -> None:
    text = BASE.replace("apiVersion: palisade.dev/v1alpha1\n", "")
    assert only_issue(text) == "bad.yaml:1:1: missing required field 'apiVersion'"


def test_wrong_api_version_points_at_the_value() -> None:
    text = BASE.replace("palisade.dev/v1alpha1", "palisade.dev/v2")
    assert only_issue(text) == (
        "bad.yaml:1:1: apiVersion: unsupported apiVersion 'palisade.dev/v2';"
        " use 'palisade.dev/v1alpha1'"
    )


def test_wrong_kind_is_refused() -> None:
    text = BASE.replace("kind: PolicyBundle", "kind: Policy")
    assert only_issue(text) == "bad.yaml:2:1: kind: kind must be 'PolicyBundle', got 'Policy'"


def test_unknown_field_suggests_the_close_one() -> None:
    text = spec_yaml("""\
        rules:
          - id: r1
            decison: allow
            decision: allow
        """)
    line = line_of(text, "decison")
    assert only_issue(text) == (
        f"bad.yaml:{line}:7: spec.rules[0].decison: unknown field 'decison'; did you mean"
        " 'decision'? (allowed here: id, decision, match, when, reason, retryAfterSeconds,"
        " approvers, mode)"
    )


def test_wrong_type_says_what_was_found() -> None:
    text = spec_yaml("""\
        rules:
          - id: r1
            decision: allow
            match: {tools: pods_log}
        """)
    line = line_of(text, "match: {tools")
    assert only_issue(text) == (
        f"bad.yaml:{line}:15: spec.rules[0].match.tools: must be a list, got a string"
    )


def test_bad_enum_value_lists_the_choices() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: alow}
        """)
    line = line_of(text, "alow")
    assert only_issue(text) == (
        f"bad.yaml:{line}:16: spec.rules[0].decision: 'alow' is not one of allow, deny,"
        " require_approval, throttle; did you mean 'allow'?"
    )


def test_duplicate_rule_id_points_at_the_second_and_names_the_first() -> None:
    text = spec_yaml("""\
        rules:
          - {id: same, decision: allow}
          - {id: same, decision: deny}
        """)
    first = line_of(text, "{id: same, decision: allow}")
    assert only_issue(text) == (
        f"bad.yaml:{first + 1}:8: spec.rules[1].id: duplicate rule id 'same'"
        f" (first at line {first}); rule ids must be unique"
    )


def test_duplicate_tool_in_one_server_is_refused() -> None:
    text = BASE.replace("- {name: pods_list, risk: read}", "- {name: pods_log, risk: read}")
    msg = only_issue(text)
    assert msg.startswith(
        "bad.yaml:10:12: spec.servers[0].tools[1].name: duplicate tool 'pods_log'"
    )


def test_rule_naming_an_unknown_server_agent_or_tenant_is_refused() -> None:
    text = spec_yaml("""\
        rules:
          - id: r1
            decision: allow
            match: {servers: [k8z], agents: [sre, ghost], tenants: [payment]}
        """)
    found = issues_of(text)
    assert [f.split(": ", 1)[1] for f in found] == [
        "spec.rules[0].match.servers[0]: unknown server 'k8z'; did you mean 'k8s'?"
        " (declare it under spec.servers)",
        "spec.rules[0].match.agents[1]: unknown agent 'ghost' (declare it under spec.agents)",
        "spec.rules[0].match.tenants[0]: unknown tenant 'payment'; did you mean 'payments'?"
        " (declare it under spec.tenants)",
    ]


def test_agent_bound_to_an_unknown_tenant_is_refused() -> None:
    text = BASE.replace("{id: other, tenant: search", "{id: other, tenant: serch")
    assert "spec.agents[1].tenant: unknown tenant 'serch'" in only_issue(text)


def test_bad_glob_is_refused_with_the_reason() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: deny, match: {tools: ["pods_[log"]}}
        """)
    assert only_issue(text).endswith(
        "spec.rules[0].match.tools[0]: bad glob 'pods_[log': '[' at position 5 is never closed"
        " with ']'"
    )


def test_cel_that_does_not_compile_is_refused() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: allow, when: "args.namespace == "}
        """)
    msg = only_issue(text)
    assert "spec.rules[0].when: CEL does not compile:" in msg


def test_cel_using_an_unknown_variable_is_refused() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: allow, when: "request.namespace == 'x'"}
        """)
    assert only_issue(text).endswith(
        "spec.rules[0].when: CEL uses unknown variable(s) request; only agent, args, call are"
        " defined"
    )


def test_cel_comprehension_variables_are_not_unknown() -> None:
    load_bytes(
        spec_yaml("""\
        rules:
          - {id: r1, decision: allow, when: "args.exists(k, k == 'x')"}
        """),
        "ok.yaml",
    )


def test_bad_budget_numbers_are_each_named() -> None:
    text = spec_yaml("""\
        budgets:
          rateLimits:
            - {id: r, rate: 0, burst: 0.5}
          spendCaps:
            - {id: s, limit: -1, windowSeconds: 0}
          mutationsPerSession: -2
        """)
    tails = [i.split(": ", 1)[1] for i in issues_of(text)]
    assert tails == [
        "spec.budgets.rateLimits[0].rate: must be greater than 0, got 0",
        "spec.budgets.rateLimits[0].burst: must be at least 1, got 0.5",
        "spec.budgets.spendCaps[0].limit: must be at least 0, got -1",
        "spec.budgets.spendCaps[0].windowSeconds: must be greater than 0, got 0",
        "spec.budgets.mutationsPerSession: must be at least 0, got -2",
    ]


def test_a_bad_per_agent_mutation_window_is_named() -> None:
    text = spec_yaml("""\
        budgets:
          mutationsPerAgent: {limit: -1, windowSeconds: 0, per: agent}
        """)
    tails = [i.split(": ", 1)[1] for i in issues_of(text)]
    assert tails == [
        "spec.budgets.mutationsPerAgent.per: unknown field 'per'"
        " (allowed here: limit, windowSeconds)",
        "spec.budgets.mutationsPerAgent.limit: must be at least 0, got -1",
        "spec.budgets.mutationsPerAgent.windowSeconds: must be greater than 0, got 0",
    ]
    assert only_issue(spec_yaml("budgets: {mutationsPerAgent: {limit: 3}}\n")).endswith(
        "spec.budgets.mutationsPerAgent: missing required field 'windowSeconds'"
    )


def test_test_expecting_an_unknown_decision_is_refused() -> None:
    text = spec_yaml("""\
        tests:
          - name: t1
            call: {agent: sre, server: k8s, tool: pods_log}
            expect: {decision: permit}
        """)
    assert only_issue(text).endswith(
        "spec.tests[0].expect.decision: 'permit' is not one of allow, deny, require_approval,"
        " throttle"
    )


def test_test_expecting_an_unknown_rule_is_refused() -> None:
    text = spec_yaml("""\
        rules:
          - {id: allow-reads, decision: allow}
        tests:
          - name: t1
            call: {agent: sre, server: k8s, tool: pods_log}
            expect: {decision: allow, rule: allow-read}
        """)
    assert only_issue(text).endswith(
        "spec.tests[0].expect.rule: test expects unknown rule 'allow-read'; did you mean"
        " 'allow-reads'?"
    )


def test_missing_required_field_is_named_at_its_parent() -> None:
    text = spec_yaml("""\
        rules:
          - {decision: allow}
        """)
    line = line_of(text, "- {decision: allow}")
    assert only_issue(text) == f"bad.yaml:{line}:7: spec.rules[0]: missing required field 'id'"


def test_duplicate_yaml_key_is_an_error_not_an_overwrite() -> None:
    text = spec_yaml("""\
        defaultDecision: allow
        defaultDecision: deny
        """)
    line = line_of(text, "defaultDecision: deny")
    first = line_of(text, "defaultDecision: allow")
    assert only_issue(text) == (
        f"bad.yaml:{line}:3: spec.defaultDecision: key 'defaultDecision' appears twice in one"
        f" mapping (first at line {first}); remove one"
    )


def test_yaml_syntax_error_has_a_position() -> None:
    msg = only_issue("apiVersion: x\nkind: [unclosed\n")
    assert msg.startswith("bad.yaml:3:1: YAML syntax error:")


def test_empty_match_list_is_refused_because_it_would_match_nothing() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: allow, match: {agents: []}}
        """)
    assert only_issue(text).endswith(
        "spec.rules[0].match.agents: an empty list matches nothing; leave the field out to match"
        " any"
    )


def test_reserved_rule_ids_are_refused() -> None:
    text = spec_yaml("""\
        rules:
          - {id: default, decision: allow}
        """)
    assert "rule id 'default' is reserved for the engine" in only_issue(text)


def test_metadata_name_must_be_a_dns_label() -> None:
    text = BASE.replace("name: t\n", "name: Not_A_Label\n", 1)
    assert "metadata.name: 'Not_A_Label' is not a DNS-1123 label" in only_issue(text)


def test_bad_gpu_quota_is_refused() -> None:
    text = BASE.replace(
        "{name: search, namespaces: [search]}",
        "{name: search, gpuQuota: {gpus: -1, enforcement: nuke}}",
    )
    tails = [i.split(": ", 1)[1] for i in issues_of(text)]
    assert tails == [
        "spec.tenants[1].gpuQuota.gpus: must be at least 0, got -1",
        "spec.tenants[1].gpuQuota.enforcement: 'nuke' is not one of report, evict, kill",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = spec_yaml("""\
        defaultDecision: maybe
        rules:
          - {id: a, decision: allow, when: "("}
          - {id: a, decision: nope}
        """)
    assert len(issues_of(text)) == 4


def test_yaml_booleans_where_a_string_belongs_get_a_quoting_hint() -> None:
    text = spec_yaml("rules:\n  - {id: no, decision: deny}\n")
    assert only_issue(text).endswith(
        "spec.rules[0].id: must be a string, got a boolean (YAML reads yes/no/on/off/true/false"
        " as booleans: quote it)"
    )


def test_test_arguments_must_be_json_values() -> None:
    text = spec_yaml("""\
        tests:
          - name: t1
            call: {agent: sre, server: k8s, tool: pods_log, arguments: {since: 2024-01-01}}
            expect: {decision: deny}
        """)
    assert "spec.tests[0].call.arguments: must hold only JSON values" in only_issue(text)


def test_a_rule_naming_an_unregistered_tool_is_refused_as_a_likely_typo() -> None:
    text = spec_yaml("""\
        rules:
          - {id: r1, decision: allow, match: {tools: [pods_lgo, "helm_*"]}}
        """)
    tails = [i.split(": ", 1)[1] for i in issues_of(text)]
    assert tails == [
        "spec.rules[0].match.tools[0]: unknown tool 'pods_lgo'; did you mean 'pods_log'? (no"
        " server this rule can match registers it; unregistered tools are denied before rules"
        " run)",
        "spec.rules[0].match.tools[1]: glob 'helm_*' matches no registered tool of the servers"
        " matched",
    ]


def test_missing_metadata_is_reported_once() -> None:
    text = BASE.replace("metadata:\n  name: t\n", "")
    assert only_issue(text) == "bad.yaml:1:1: missing required field 'metadata'"


def test_one_identity_may_map_to_only_one_agent() -> None:
    text = BASE.replace(
        '{id: sre, tenant: payments, namespaces: [payments], scopes: ["k8s:write"]}',
        "{id: sre, tenant: payments, identities: [{serviceAccount: payments/bot}]}",
    ).replace(
        "{id: other, tenant: search, namespaces: [search]}",
        "{id: other, tenant: search, identities: [{serviceAccount: payments/bot}]}",
    )
    assert only_issue(text).endswith(
        "spec.agents[1].identities[0]: this identity already maps to agent 'sre'; one identity,"
        " one agent"
    )


def test_a_test_needs_exactly_one_of_call_and_gpu() -> None:
    text = spec_yaml("""\
        tests:
          - name: t1
            expect: {decision: deny}
        """)
    assert only_issue(text).endswith(
        "spec.tests[0]: needs exactly one of 'call' (a tool call to decide) or 'gpu' (a tenant's"
        " GPU usage to check against its quota)"
    )


def test_gpu_tests_need_a_tenant_with_a_quota_and_known_limit_names() -> None:
    text = spec_yaml("""\
        tests:
          - name: t1
            gpu: {tenant: payments, gpus: 1}
            expect: {violations: [gpu]}
        """)
    tails = [i.split(": ", 1)[1] for i in issues_of(text)]
    assert tails == [
        "spec.tests[0].expect.violations[0]: 'gpu' is not a quota limit; use gpus,"
        " gpuMemoryBytes, powerWatts, allocatedDevicesOnly or migInstances/<profile>",
        "spec.tests[0].gpu.tenant: tenant 'payments' has no gpuQuota to test",
    ]
