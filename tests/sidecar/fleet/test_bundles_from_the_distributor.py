"""A real sidecar process takes its bundles from a real distributor process."""

from __future__ import annotations

from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from tests.harness.peers import stop

from .conftest import FREEZE_READS, World, mcp_client, policy, until, write_keypair

pytestmark = pytest.mark.e2e


async def test_the_bundle_arrives_is_acked_and_the_sidecar_shows_in_the_fleet(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    doc = await world.ready(sc, revision=1)
    assert doc["distributor"]["state"] == "OK"
    assert doc["distributor"]["connected"] is True
    assert sc.metric("palisade_sidecar_distributor_connected") == 1.0
    assert sc.metric("palisade_sidecar_bundle_revision") == 1.0

    async with mcp_client(sc.url) as c:
        allowed = await c.call_tool("pods_list", {"namespace": "payments"})
        assert "payments-api" in allowed.content[0].text  # type: ignore[union-attr]
        with pytest.raises(MCPError) as denied:
            await c.call_tool("resources_delete", {"kind": "Deployment", "name": "x"})
        assert denied.value.error.data["rule"] == "deny-destructive"

    async def acked_with_counters() -> dict[str, Any] | None:
        row = await world.distributor.sidecar(sc.client_id)
        # the row exists from the ACK on; its counters come with the next heartbeat
        if row and row["revision"] == 1 and (row["counters"] or {}).get("calls", 0) >= 2:
            return row
        return None

    row = await until(acked_with_counters, what="the sidecar ACKed with its counters")
    assert row["kind"] == "CLIENT_KIND_SIDECAR"
    assert row["server"] == "kubernetes-mcp"
    who = (row["namespace"], row["pod"], row["node"], row["tenant"])
    assert who == ("payments", "sc-1", "node-1", "payments")
    assert row["state"] == "live"
    assert row["nack_revision"] == 0
    assert row["health"] == "ok"
    counters = row["counters"]
    assert counters["revision"] == 1
    assert counters["allowed"] >= 1 and counters["denials"] >= 1


async def test_a_policy_change_on_disk_reaches_the_sidecar_and_changes_a_decision(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1", via_env=True)  # PALISADE_DISTRIBUTOR, as the injector sets
    await world.ready(sc, revision=1)
    async with mcp_client(sc.url) as c:
        await c.call_tool("pods_list", {"namespace": "payments"})

        world.distributor.write_policy(policy(FREEZE_READS))
        await world.ready(sc, revision=2)
        with pytest.raises(MCPError) as denied:
            await c.call_tool("pods_list", {"namespace": "payments"})
    data = denied.value.error.data
    assert (data["rule"], data["bundle_revision"]) == ("freeze-pods-list", 2)
    records = [r for r in sc.audit() if r.get("tool") == "pods_list"]
    assert [(r["decision"], r["bundle_revision"]) for r in records] == [
        ("allow", 1),
        ("deny", 2),
    ]

    async def acked_2() -> bool:
        row = await world.distributor.sidecar(sc.client_id)
        return bool(row and row["revision"] == 2)

    await until(acked_2, what="revision 2 ACKed")


async def test_an_unverifiable_bundle_is_nacked_and_the_old_one_keeps_enforcing(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    # The distributor comes back signing with a key the sidecar does not trust.
    world.distributor.stop()
    world.distributor.write_policy(policy(FREEZE_READS))
    rogue = world.tmp / "rogue.pem"
    write_keypair(rogue)
    world.distributor.start(key_path=rogue)

    async def nacked() -> dict[str, Any] | None:
        row = await world.distributor.sidecar(sc.client_id)
        return row if row and row["nack_revision"] == 2 else None

    row = await until(nacked, what="revision 2 NACKed")
    assert row["revision"] == 1
    assert "verification failed" in row["nack_error"]

    status, doc = sc.readyz()
    assert status == 200, doc  # still enforcing its last good bundle: ready
    assert doc["bundle_revision"] == 1
    assert "verification failed" in doc["distributor"]["last_error"]
    assert sc.metric("palisade_sidecar_distributor_nacks") >= 1
    async with mcp_client(sc.url) as c:  # revision 2 would deny this
        result = await c.call_tool("pods_list", {"namespace": "payments"})
    assert not result.is_error
    assert [r["bundle_revision"] for r in sc.audit() if r.get("tool") == "pods_list"] == [1]


async def test_a_restarted_sidecar_enforces_its_last_good_bundle_while_the_distributor_is_down(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    world.distributor.stop()
    stop(sc.proc)
    again = world.start_sidecar("sc-1")  # the same state dir: last-known-good on disk
    doc = await world.ready(again, revision=1)
    assert doc["distributor"]["connected"] is False
    async with mcp_client(again.url) as c:
        result = await c.call_tool("pods_list", {"namespace": "payments"})
        assert not result.is_error
        with pytest.raises(MCPError) as denied:
            await c.call_tool("resources_delete", {"kind": "Deployment", "name": "x"})
    assert denied.value.error.data["rule"] == "deny-destructive"


async def test_a_sidecar_that_never_got_a_bundle_is_not_ready_and_denies_until_one_arrives(
    world: World,
) -> None:
    world.distributor.stop()
    sc = world.start_sidecar("sc-1")
    status, doc = sc.readyz()
    assert status == 503
    assert any("no bundle from the distributor yet" in p for p in doc["problems"])
    async with mcp_client(sc.url) as c:
        with pytest.raises(MCPError) as denied:
            await c.call_tool("pods_list", {"namespace": "payments"})
        assert denied.value.error.data["rule"] == "no-bundle"
        world.distributor.start()
        await world.ready(sc, revision=1)
        result = await c.call_tool("pods_list", {"namespace": "payments"})
    assert not result.is_error
