"""Audit records of a real sidecar reach the distributor, exactly once, even across outages."""

from __future__ import annotations

import pytest
from mcp.shared.exceptions import MCPError

from tests.harness.peers import stop

from .conftest import SidecarProc, World, mcp_client, until

pytestmark = pytest.mark.e2e


async def make_calls(sc: SidecarProc, n: int) -> tuple[int, int]:
    """``n`` allowed reads and ``n`` denied deletes; all answered by the sidecar."""
    allowed = denied = 0
    async with mcp_client(sc.url) as c:
        for i in range(n):
            result = await c.call_tool("pods_list", {"namespace": "payments"})
            allowed += not result.is_error
            with pytest.raises(MCPError) as refused:
                await c.call_tool("resources_delete", {"kind": "Deployment", "name": f"d{i}"})
            denied += refused.value.error.data["rule"] == "deny-destructive"
    return allowed, denied


async def stored_seqs(world: World, source: str) -> list[int]:
    rows = await world.distributor.audit("--source", source)
    return sorted(int(r["seq"]) for r in rows)


async def test_records_are_shipped_while_the_distributor_is_up(world: World) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    assert await make_calls(sc, 3) == (3, 3)
    local = sc.audit()
    kinds = [r["kind"] for r in local]
    assert (kinds.count("decision"), kinds.count("outcome"), len(local)) == (6, 3, 9)

    async def all_stored() -> bool:
        return await stored_seqs(world, sc.source) == [r["seq"] for r in local]

    await until(all_stored, what="every audit record stored by the distributor")
    rows = await world.distributor.audit("--source", sc.source, "--decision", "deny")
    assert len(rows) == 3
    assert {r["rule_id"] for r in rows} == {"deny-destructive"}
    assert {r["hash"] for r in rows} <= {r["hash"] for r in local}


async def test_with_the_distributor_down_calls_are_decided_and_audited_then_delivered_on_return(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    world.distributor.stop()

    # decided from the active bundle, audited on disk, waiting in the spool
    assert await make_calls(sc, 10) == (10, 10)
    status, doc = sc.readyz()
    assert status == 200 and doc["distributor"]["connected"] is False

    async def spooled() -> bool:
        link = sc.readyz()[1]["distributor"]
        return bool(link["audit_spool_bytes"] > 0 and link["audit_behind"] == 0)

    await until(spooled, what="the records waiting in the spool")
    assert sc.metric("palisade_sidecar_distributor_connected") == 0.0
    assert sc.metric("palisade_sidecar_audit_spool_bytes") > 0

    # the sidecar restarts during the outage; the spool and the audit log survive it
    stop(sc.proc)
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    assert await make_calls(sc, 5) == (5, 5)
    local = sc.audit()
    kinds = [r["kind"] for r in local]  # an outcome for each allowed call
    assert (kinds.count("decision"), kinds.count("outcome"), len(local)) == (30, 15, 45)
    assert [r["seq"] for r in local] == list(range(1, 46))

    world.distributor.start()

    async def all_stored_once() -> bool:
        return await stored_seqs(world, sc.source) == list(range(1, 46))

    await until(all_stored_once, within=40, what="all 45 records stored, each once")
    _, doc = sc.readyz()
    assert doc["distributor"]["audit_spool_bytes"] == 0
    assert doc["distributor"]["audit_behind"] == 0
