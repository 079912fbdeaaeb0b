"""The chart's ``upstreamTokens``: a Role per MCP server that lets its sidecar mint tokens
for exactly the named agents' ServiceAccounts (rendered with the real helm)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import render, render_text

ENTRY = {
    "namespace": "payments",
    "serverServiceAccount": "kubernetes-mcp",
    "agentServiceAccounts": ["sre-agent-payments"],
}


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [
        o for o in objects if o.get("kind") == kind and "upstream-tokens" in o["metadata"]["name"]
    ]


def test_by_default_no_sidecar_may_mint_tokens() -> None:
    assert of_kind(render(), "Role") == [] and of_kind(render(), "RoleBinding") == []


def test_each_entry_grants_create_on_serviceaccounts_token_for_exactly_its_agents() -> None:
    objects = render({"upstreamTokens": [ENTRY]})
    (role,) = of_kind(objects, "Role")
    assert role["metadata"]["namespace"] == "payments"
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "resourceNames": ["sre-agent-payments"],
            "verbs": ["create"],
        }
    ]
    (binding,) = of_kind(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "kubernetes-mcp", "namespace": "payments"}
    ]


def test_an_entry_without_agents_is_refused_by_the_schema() -> None:
    with pytest.raises(AssertionError, match="agentServiceAccounts"):
        render_text(values={"upstreamTokens": [{**ENTRY, "agentServiceAccounts": []}]})
