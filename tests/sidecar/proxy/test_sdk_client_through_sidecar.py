"""The official MCP Python SDK client -> sidecar -> an MCPServer (Streamable HTTP) subprocess."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from sidecar import jsonrpc
from sidecar.gate import FILTERED_META_KEY, UNTRUSTED_META_KEY

from .conftest import Sidecar, auth

pytestmark = pytest.mark.e2e


@contextlib.asynccontextmanager
async def sdk_client(url: str, token: str = "sre-token", **kw: Any) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers=auth(token))
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="legacy", **kw) as c,
    ):
        yield c


async def test_initialize_reports_the_upstream_server(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        assert c.server_info is not None
        assert c.server_info.name == "kubernetes-mcp"
        assert c.protocol_version == "2025-11-25"


async def test_tools_list_shows_only_tools_the_agent_may_call(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        listed = await c.list_tools()
    names = {t.name for t in listed.tools}
    # destructive (by the server's own annotation) and unregistered tools are hidden
    assert "resources_delete" not in names
    assert "helm_install" not in names
    assert {"pods_list", "pods_log", "wait_rollout", "resources_create_or_update"} <= names
    assert listed.meta is not None
    assert set(listed.meta[FILTERED_META_KEY]) == {"resources_delete", "helm_install"}


async def test_another_tenants_agent_sees_only_what_it_could_be_allowed(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url, token="search-token") as c:
        listed = await c.list_tools()
    # reads are for payments only; a write in its own namespace depends on the
    # arguments (a CEL condition), so that tool stays listed
    assert {t.name for t in listed.tools} == {"resources_create_or_update"}


async def test_an_allowed_read_reaches_the_upstream_and_is_audited(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        result = await c.call_tool("pods_list", {"namespace": "payments"})
    assert not result.is_error
    assert "payments-api" in result.content[0].text  # type: ignore[union-attr]
    rec = [r for r in sidecar.audit() if r.get("tool") == "pods_list"][-1]
    assert rec["decision"] == "allow"
    assert rec["rule_id"] == "allow-reads"
    assert rec["agent"] == "sre-agent"
    assert rec["on_behalf_of"] == "alice@example.com"
    assert rec["dev_identity"] is True


async def test_untrusted_output_is_marked(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        result = await c.call_tool("pods_log", {"namespace": "payments", "name": "payments-api-0"})
    assert result.meta is not None and result.meta[UNTRUSTED_META_KEY] is True


async def test_a_destructive_call_is_denied_with_rule_and_reason(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        await c.list_tools()  # the server's annotations are learned here
        with pytest.raises(MCPError) as info:
            await c.call_tool(
                "resources_delete",
                {"kind": "Deployment", "name": "payments-api", "namespace": "payments"},
            )
    err = info.value.error
    assert err.code == jsonrpc.POLICY_DENIED
    assert err.data["decision"] == "deny"
    assert err.data["rule"] == "deny-destructive"
    assert "destructive" in err.data["reason"]
    rec = [r for r in sidecar.audit() if r.get("tool") == "resources_delete"][-1]
    assert rec["decision"] == "deny"


async def test_a_tool_whose_risk_only_the_server_knows_is_denied_before_it_was_listed(
    sidecar: Sidecar,
) -> None:
    async with sdk_client(sidecar.url) as c:
        with pytest.raises(MCPError) as info:
            await c.call_tool("wait_rollout", {"namespace": "payments", "name": "api", "steps": 1})
        assert info.value.error.data["rule"] == "default"
        await c.list_tools()
        ok = await c.call_tool("wait_rollout", {"namespace": "payments", "name": "api", "steps": 1})
    assert not ok.is_error


async def test_an_unregistered_tool_is_refused_by_the_registry(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        with pytest.raises(MCPError) as info:
            await c.call_tool("helm_install", {"chart": "evil/miner", "namespace": "payments"})
    assert info.value.error.data["rule"] == "registry"


async def test_a_write_elsewhere_is_denied_by_a_cel_condition(sidecar: Sidecar) -> None:
    async with sdk_client(sidecar.url) as c:
        with pytest.raises(MCPError) as info:
            await c.call_tool(
                "resources_create_or_update",
                {"kind": "ConfigMap", "name": "x", "namespace": "kube-system"},
            )
    assert info.value.error.data["rule"] == "deny-writes-elsewhere"


async def test_the_fourth_mutation_in_a_session_needs_approval(sidecar: Sidecar) -> None:
    args = {"kind": "ConfigMap", "name": "cfg", "namespace": "payments"}
    async with sdk_client(sidecar.url) as c:
        for _ in range(3):
            ok = await c.call_tool("resources_create_or_update", args)
            assert not ok.is_error
        with pytest.raises(MCPError) as info:
            await c.call_tool("resources_create_or_update", args)
    err = info.value.error
    assert err.code == jsonrpc.APPROVAL_REQUIRED
    assert err.data["decision"] == "require_approval"
    assert err.data["approval_id"]
    assert err.data["approval_id"] in err.message
    rec = [r for r in sidecar.audit() if r.get("decision") == "require_approval"][-1]
    assert rec["approval_id"] == err.data["approval_id"]
    # the secret-marked argument is redacted in the audit record
    assert rec["arguments"]["name"] == "[REDACTED]"


async def test_a_burst_beyond_the_rate_limit_is_throttled_with_retry_after(
    sidecar: Sidecar,
) -> None:
    async with sdk_client(sidecar.url, token="busy-token") as c:
        for _ in range(2):
            await c.call_tool("pods_list", {})
        with pytest.raises(MCPError) as info:
            await c.call_tool("pods_list", {})
    err = info.value.error
    assert err.code == jsonrpc.THROTTLED
    assert err.data["decision"] == "throttle"
    assert err.data["retry_after"] > 0


async def test_progress_notifications_pass_through(sidecar: Sidecar) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with sdk_client(sidecar.url) as c:
        await c.list_tools()  # wait_rollout's risk comes from the server's annotations
        result = await c.call_tool(
            "wait_rollout",
            {"namespace": "payments", "name": "api", "steps": 3},
            progress_callback=on_progress,
        )
    assert not result.is_error
    assert seen == [(1, 3), (2, 3), (3, 3)]


async def test_the_modern_revision_works_end_to_end(sidecar: Sidecar) -> None:
    http = create_mcp_http_client(headers=auth())
    async with (
        http,
        Client(streamable_http_client(sidecar.url, http_client=http), mode="2026-07-28") as c,
    ):
        assert c.protocol_version == "2026-07-28"
        listed = await c.list_tools()
        assert "resources_delete" not in {t.name for t in listed.tools}
        result = await c.call_tool("pods_list", {"namespace": "payments"})
        assert not result.is_error
        # the SDK mirrors the annotated argument into Mcp-Param-Namespace; the sidecar checks it
        top = await c.call_tool("pods_top", {"namespace": "payments"})
        assert not top.is_error
        with pytest.raises(MCPError) as info:
            await c.call_tool(
                "resources_delete", {"kind": "Pod", "name": "x", "namespace": "payments"}
            )
    assert info.value.error.data["rule"] == "deny-destructive"
