"""Bundles load from a file, a directory or bytes; the canonical form and digest are stable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.bundle import (
    BundleValidationError,
    bundle_digest,
    canonical_bytes,
    from_document,
    load_bytes,
    load_dir,
    load_file,
    to_document,
)
from palisade.bundle.canonical import canonical_json
from palisade.policy import Decision
from tests.policy.kit import BASE, spec_yaml

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "payments-bundle.yaml"


def test_the_example_bundle_loads_with_its_registry_agents_and_quota() -> None:
    b = load_file(EXAMPLE)
    k8s = b.server("kubernetes-mcp")
    assert k8s is not None and k8s.tool("pods_log") is not None
    assert k8s.tool("pods_log").untrusted_output  # type: ignore[union-attr]
    agent = b.agent("sre-agent-payments")
    assert agent is not None and agent.namespaces == ("payments",)
    tenant = b.tenant("payments")
    assert tenant is not None and tenant.gpu_quota is not None and tenant.gpu_quota.gpus == 2
    assert b.budgets.mutations_per_session == 5


def test_canonical_document_round_trips_to_an_equal_bundle() -> None:
    b = load_file(EXAMPLE)
    again = from_document(json.loads(canonical_bytes(b)))
    assert again == b
    assert bundle_digest(again) == bundle_digest(b)


def test_formatting_and_defaults_do_not_change_the_digest() -> None:
    a = load_bytes(spec_yaml("rules:\n  - {id: r, decision: allow}\n"))
    b = load_bytes(
        spec_yaml(
            "defaultDecision: deny\nfailureMode: closed\n"
            "rules:\n  - id: r     # comment\n    decision: allow\n    when: ''\n"
        )
    )
    assert bundle_digest(a) == bundle_digest(b)
    c = load_bytes(spec_yaml("rules:\n  - {id: r, decision: deny}\n"))
    assert bundle_digest(c) != bundle_digest(a)


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_a_directory_of_files_merges_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "10-base.yaml").write_text(BASE)
    (tmp_path / "20-rules.yaml").write_text(
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: t}\n"
        "spec:\n  rules:\n    - {id: allow-reads, decision: allow, match: {risk: [read]}}\n"
    )
    (tmp_path / "30-more.yml").write_text(
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: t}\n"
        "spec:\n  rules:\n    - {id: deny-rest, decision: deny}\n"
    )
    (tmp_path / "README.md").write_text("not a bundle")
    b = load_dir(tmp_path)
    assert [r.id for r in b.rules] == ["allow-reads", "deny-rest"]
    assert load_file(tmp_path) == b


def test_errors_in_a_merged_directory_name_the_right_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "10-base.yaml").write_text(BASE)
    (tmp_path / "20-rules.yaml").write_text(
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: t}\n"
        "spec:\n  rules:\n    - {id: ok, decision: allow}\n    - {id: bad, decision: nope}\n"
    )
    with pytest.raises(BundleValidationError) as exc:
        load_dir(tmp_path)
    (issue,) = exc.value.issues
    assert str(issue).startswith(f"{tmp_path / '20-rules.yaml'}:7:17: spec.rules[1].decision:")


def test_conflicting_settings_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE + "  defaultDecision: deny\n")
    (tmp_path / "b.yaml").write_text(
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyBundle\nmetadata: {name: t}\n"
        "spec:\n  defaultDecision: allow\n"
    )
    with pytest.raises(BundleValidationError, match="conflicts with 'deny' set in another file"):
        load_dir(tmp_path)


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleValidationError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_an_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleValidationError, match="no bundle files"):
        load_dir(tmp_path)


def test_json_documents_load_like_yaml() -> None:
    doc = to_document(load_file(EXAMPLE))
    assert load_bytes(json.dumps(doc), "b.json") == load_file(EXAMPLE)


names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=40, deadline=None)
@given(
    tools=st.lists(names, min_size=1, max_size=5, unique=True),
    rules=st.lists(
        st.tuples(
            st.sampled_from(list(Decision)),
            st.lists(st.sampled_from(["read", "write", "destructive", "admin"]), max_size=2),
            st.sampled_from(["", "has(args.ns)", "size(args) > 1"]),
        ),
        max_size=6,
    ),
)
def test_any_valid_bundle_round_trips_through_its_canonical_document(
    tools: list[str], rules: list[tuple[Decision, list[str], str]]
) -> None:
    doc = {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": "p"},
        "spec": {
            "servers": [{"name": "s", "tools": [{"name": t, "risk": "read"} for t in tools]}],
            "rules": [
                {
                    "id": f"r{i}",
                    "decision": d.value,
                    "when": w,
                    **({"match": {"risk": r}} if r else {}),
                }
                for i, (d, r, w) in enumerate(rules)
            ],
        },
    }
    b = from_document(doc)
    assert from_document(json.loads(canonical_bytes(b))) == b
    assert canonical_bytes(from_document(to_document(b))) == canonical_bytes(b)


def test_a_custom_resource_exported_from_the_cluster_lints_as_it_is() -> None:
    cr = (
        BASE.replace(
            "metadata:\n  name: t\n",
            "metadata:\n  name: t\n  namespace: palisade\n  uid: 1b4e28ba-2fa1\n"
            "  resourceVersion: '4242'\n  generation: 3\n"
            "  creationTimestamp: '2026-01-01T00:00:00Z'\n"
            "  managedFields: [{manager: kubectl, operation: Apply}]\n",
        )
        + "status:\n  observedGeneration: 3\n"
    )
    plain = load_bytes(BASE)
    assert load_bytes(cr) == plain
    assert bundle_digest(load_bytes(cr)) == bundle_digest(plain)


def test_every_rule_field_the_schema_allows_survives_the_canonical_document() -> None:
    """The canonical document is what is signed and shipped: a rule field it leaves out
    is silently dropped on the way to every sidecar (a staged ``mode: audit`` rule would
    be enforced)."""
    text = spec_yaml(
        "rules:\n"
        "  - id: staged\n    mode: audit\n    decision: throttle\n    retryAfterSeconds: 7\n"
        "    match: {tools: [apply]}\n    when: has(args.ns)\n    reason: slow down\n"
        "  - id: two-people\n    decision: require_approval\n    approvers: 2\n"
    )
    bundle = load_bytes(text)
    shipped = json.loads(canonical_bytes(bundle))
    schema = json.loads((ROOT / "schemas" / "policybundle.schema.json").read_text())
    rule_fields = set(schema["properties"]["spec"]["properties"]["rules"]["items"]["properties"])
    shown = {k for r in shipped["spec"]["rules"] for k in r}
    assert rule_fields <= shown, f"dropped from the canonical document: {rule_fields - shown}"
    again = from_document(shipped)
    assert again == bundle
    assert again.rules[0].mode.value == "audit" and again.rules[1].approvers == 2
