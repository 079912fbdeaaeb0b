"""require_approval end to end: sidecar -> distributor -> `palisade approvals` -> sidecar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from sidecar import jsonrpc

from .conftest import SidecarProc, World, acli, make_world, mcp_client, until

pytestmark = pytest.mark.e2e

TOOL = "resources_create_or_update"
SCALE = {"kind": "Deployment", "name": "payments-api", "namespace": "payments", "replicas": 2}


async def asked(c: Client, args: dict[str, Any]) -> str:
    """Call; it must be held for approval; returns the approval id the caller can cite."""
    with pytest.raises(MCPError) as held:
        await c.call_tool(TOOL, args)
    err = held.value.error
    assert err.code == jsonrpc.APPROVAL_REQUIRED, err
    approval_id = str(err.data["approval_id"])
    assert approval_id in err.message
    return approval_id


async def pending_row(world: World, approval_id: str) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        rows = await world.distributor.approvals()
        return next((r for r in rows if r["id"] == approval_id), None)

    row: dict[str, Any] = await until(find, what=f"approval {approval_id} pending")
    return row


async def decide(world: World, verb: str, approval_id: str, by: str, comment: str) -> None:
    done = await acli(
        "approvals",
        verb,
        approval_id,
        "--by",
        by,
        "--comment",
        comment,
        "--url",
        world.distributor.url,
    )
    assert done.returncode == 0, done.stderr


async def approved_and_delivered(world: World, approval_id: str, comment: str) -> None:
    """A human approves the pending request, and the answer reaches the sidecar."""
    await pending_row(world, approval_id)
    await decide(world, "approve", approval_id, "alice", comment)

    async def delivered() -> bool:
        rows = await world.distributor.approvals("--all")
        return any(r["id"] == approval_id and r["delivered"] for r in rows)

    await until(delivered, what=f"{approval_id} delivered to the sidecar")


async def retried_until(c: Client, args: dict[str, Any], approval_id: str, expect: str) -> Any:
    """Retry the same call until the human's answer has reached the sidecar."""

    async def attempt() -> Any:
        try:
            result = await c.call_tool(TOOL, args)
        except MCPError as exc:
            if exc.error.code == jsonrpc.APPROVAL_REQUIRED:
                assert exc.error.data["approval_id"] == approval_id  # the same request, waiting
                return None
            return exc if expect == "deny" else pytest.fail(f"unexpected {exc.error}")
        return result if expect == "allow" else pytest.fail("allowed, expected a denial")

    return await until(attempt, what=f"the answer to {approval_id}")


def records(sc: SidecarProc, decision: str) -> list[dict[str, Any]]:
    return [r for r in sc.audit() if r.get("tool") == TOOL and r["decision"] == decision]


async def test_an_approved_call_is_allowed_once_when_retried_unchanged(world: World) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        assert await asked(c, SCALE) == approval_id  # asking again is not a second request

        row = await pending_row(world, approval_id)
        assert (row["agent"], row["server"], row["tool"]) == ("sre-agent", "kubernetes-mcp", TOOL)
        assert row["rule_id"] == "writes-need-approval"
        assert row["client_id"] == sc.client_id
        assert row["call_digest"].startswith("sha256:")
        assert row["arguments"]["replicas"] == 2
        assert row["arguments"]["name"] == "[REDACTED]"  # a secret argument never leaves

        await decide(world, "approve", approval_id, "alice", "scale up, on call")
        result = await retried_until(c, SCALE, approval_id, "allow")
        assert "Deployment payments/payments-api configured" in result.content[0].text

        # used up: the same call once more is a new request
        again = await asked(c, SCALE)
        assert again != approval_id

    allowed = records(sc, "allow")
    assert len(allowed) == 1
    rec = allowed[0]
    assert (rec["rule_id"], rec["approval_id"]) == ("writes-need-approval", approval_id)
    assert rec["details"]["approval"] == "granted"
    assert rec["details"]["approved_by"] == "alice"
    assert "approved by alice" in rec["reason"]
    held = records(sc, "require_approval")
    assert {r["approval_id"] for r in held} == {approval_id, again}

    # the allowed-by-approval record reaches the distributor too
    async def shipped() -> list[dict[str, Any]]:
        return await world.distributor.audit("--source", sc.source, "--decision", "allow")

    stored = await until(shipped, what="the approved call's record at the distributor")
    assert stored[0]["approval_id"] == approval_id


async def test_an_approval_binds_the_exact_call_and_session(world: World) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        await approved_and_delivered(world, approval_id, "only this one")
        # other arguments: another call, asked for on its own
        other = await asked(c, {**SCALE, "replicas": 20})
        assert other != approval_id
        # the same arguments from another session: another call too
        async with mcp_client(sc.url) as elsewhere:
            assert await asked(elsewhere, SCALE) not in (approval_id, other)
        # the approved one still works, in its own session
        result = await c.call_tool(TOOL, SCALE)
    assert not result.is_error
    assert [r["approval_id"] for r in records(sc, "allow")] == [approval_id]


async def test_a_denied_approval_is_answered_as_a_denial(world: World) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        await pending_row(world, approval_id)
        await decide(world, "deny", approval_id, "bob", "not during the freeze")
        refused = await retried_until(c, SCALE, approval_id, "deny")
        err = refused.error
        assert err.code == jsonrpc.POLICY_DENIED
        assert err.data["decision"] == "deny"
        assert err.data["approval_id"] == approval_id
        assert err.data["rule"] == "writes-need-approval"
        assert "denied by bob: not during the freeze" in err.data["reason"]
        # and again, while the denial stands
        with pytest.raises(MCPError) as still:
            await c.call_tool(TOOL, SCALE)
        assert still.value.error.code == jsonrpc.POLICY_DENIED
    denied = records(sc, "deny")
    assert len(denied) == 2
    assert all(r["approval_id"] == approval_id for r in denied)
    assert all(r["details"]["denied_by"] == "bob" for r in denied)
    assert not records(sc, "allow")


@pytest.fixture
def short_window(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, approval_window_s=3.0, extra=["--insecure-approvers"])
    try:
        yield w
    finally:
        w.close()


async def test_an_approval_is_not_honoured_after_its_window(short_window: World) -> None:
    world = short_window
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        await pending_row(world, approval_id)
        await decide(world, "approve", approval_id, "alice", "quick")

        async def delivered() -> dict[str, Any] | None:
            rows = await world.distributor.approvals("--all")
            return next((r for r in rows if r["id"] == approval_id and r["delivered"]), None)

        row = await until(delivered, what="the approval delivered to the sidecar")
        wait = row["expires"] - time.time() + 0.5
        if wait > 0:
            await asyncio.sleep(wait)
        late = await asked(c, SCALE)
    assert late != approval_id
    assert not records(sc, "allow")


async def test_a_call_held_while_the_distributor_is_down_is_asked_for_when_it_returns(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    world.distributor.stop()
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)  # held at once; the request waits in the sidecar
        _, doc = sc.readyz()
        assert doc["distributor"]["approvals_pending"] == 1
        world.distributor.start()
        row = await pending_row(world, approval_id)
        assert row["client_id"] == sc.client_id
        await decide(world, "approve", approval_id, "alice", "after the outage")
        result = await retried_until(c, SCALE, approval_id, "allow")
    assert not result.is_error


async def test_an_approval_delivered_just_before_a_restart_still_lets_the_call_through(
    world: World,
) -> None:
    """The answer reached the sidecar, which restarted before the agent retried: the held
    request was kept in the state dir, is asked again once the sidecar is back, and the
    distributor answers the id it already decided again. Used once, as always."""
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        approval_id = await asked(c, SCALE)
        await approved_and_delivered(world, approval_id, "just before the restart")
        world.restart_sidecar(sc)  # the MCP session lives on in the upstream server
        await world.ready(sc, revision=1)
        result = await retried_until(c, SCALE, approval_id, "allow")
        assert not result.is_error
        again = await asked(c, SCALE)  # the approval was used up
    assert again != approval_id
    (allowed,) = records(sc, "allow")
    assert allowed["approval_id"] == approval_id
