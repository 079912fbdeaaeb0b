"""Failover and outages: replicas die, clients keep enforcing and keep their audit on disk."""

from __future__ import annotations

import asyncio
import json

from palisade.distribution import State
from palisade.v1 import audit_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import ahttp, bundle_yaml, eventually, make_client
from tests.distributor.signed_audit import Chain


def records(chain: Chain, n: int) -> list[audit_pb2.AuditRecord]:
    """The next ``n`` records of ``chain`` (signed, chained: the distributor verifies them)."""
    return chain.protos(
        n, agent="sre-agent-payments", tool="pods_log", server="kubernetes-mcp", decision="allow"
    )


async def test_killing_a_replica_moves_its_clients_to_another_with_no_revision_flap(
    fleet: Fleet,
) -> None:
    r0 = fleet.start("r0")
    r1 = fleet.start("r1")
    clients = []
    for i in range(10):
        client, rec = make_client(fleet.tmp, f"c{i}", [r0.target, r1.target], fleet.trusted)
        await client.start()
        clients.append((client, rec))
    try:
        await eventually(lambda: all(c.status.revision == 1 for c, _ in clients), 15, "rev 1")
        assert all(c.target == r0.target for c, _ in clients)
        r0.kill()
        await eventually(
            lambda: all(c.target == r1.target and c.status.connected for c, _ in clients),
            15,
            "failover to r1",
        )
        assert all(c.connects == 2 for c, _ in clients)
        assert all(rec.revisions == [1] for _, rec in clients), "failover re-sent nothing"
        assert all(c.acks == 1 for c, _ in clients)
        fleet.write_policy(bundle_yaml(reason="after failover"))
        await eventually(lambda: all(c.status.revision == 2 for c, _ in clients), 15, "rev 2")
        assert all(rec.revisions == [1, 2] for _, rec in clients)
    finally:
        for c, _ in clients:
            await c.stop()


async def test_with_every_replica_down_clients_keep_enforcing_and_deliver_audit_on_return(
    fleet: Fleet,
) -> None:
    forwarded = fleet.tmp / "forwarded.jsonl"
    r0 = fleet.start("r0", extra=["--audit-forward", str(forwarded)])
    clients = []
    chains = {}
    for i in range(5):
        chains[f"c{i}"] = Chain(f"c{i}")
        client, rec = make_client(
            fleet.tmp, f"c{i}", [r0.target], fleet.trusted, audit_keys=(chains[f"c{i}"].key(),)
        )
        await client.start()
        clients.append((client, rec))
    try:
        await eventually(lambda: all(c.status.revision == 1 for c, _ in clients), 15, "rev 1")
        for c, _ in clients:
            c.record_audit(records(chains[c.identity.id], 50))
        await eventually(
            lambda: all(c.spool.pending_bytes() == 0 for c, _ in clients), 15, "first batch"
        )
        port = r0.grpc_port
        r0.kill()
        await eventually(lambda: not any(c.status.connected for c, _ in clients), 10, "down")
        for c, _ in clients:
            for _ in range(4):  # written in several bursts while down
                c.record_audit(records(chains[c.identity.id], 50))
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        for c, _ in clients:
            assert c.status.state is State.OK, "still enforcing the last good bundle"
            assert c.active is not None and c.active.revision == 1
            assert c.spool.pending_bytes() > 0, "audit waits on disk"
        fleet.start("r0-again", grpc_port=port, extra=["--audit-forward", str(forwarded)])
        await eventually(
            lambda: all(c.spool.pending_bytes() == 0 for c, _ in clients), 20, "audit drained"
        )
        _, body = await ahttp(
            "GET", fleet.replicas[-1].url + "/v1/audit?kind=decision&limit=100000"
        )
        assert body["count"] == 5 * 250, "every record arrived exactly once"
        per_source: dict[str, set[int]] = {}
        for row in body["records"]:
            per_source.setdefault(row["source"], set()).add(int(row["seq"]))
        assert all(seqs == set(range(1, 251)) for seqs in per_source.values())
        assert len(per_source) == 5
        lines = [json.loads(x) for x in forwarded.read_text().splitlines()]
        assert len(lines) == 5 * 250, "each stored record forwarded once"
        assert len({(x["source"], x["seq"]) for x in lines}) == 5 * 250
        assert all(rec.revisions == [1] for _, rec in clients)
    finally:
        for c, _ in clients:
            await c.stop()


async def test_a_client_that_stops_heartbeating_shows_as_stale_within_the_grace_period(
    fleet: Fleet,
) -> None:
    r0 = fleet.start("r0")  # grace 2 s
    live, _ = make_client(fleet.tmp, "live", [r0.target], fleet.trusted, heartbeat_s=0.3)
    silent, _ = make_client(fleet.tmp, "silent", [r0.target], fleet.trusted, heartbeat_s=3600)
    await live.start()
    await silent.start()
    try:
        loop = asyncio.get_running_loop()
        await eventually(lambda: live.status.connected and silent.status.connected, 10, "up")
        last_message = loop.time()  # silent's ACK of revision 1 is the last it ever sends

        async def states() -> dict[str, str]:
            _, body = await ahttp("GET", r0.url + "/v1/fleet")
            return {row["id"]: row["state"] for row in body["clients"]}

        while (await states()).get("silent") != "live":  # first flush of fleet rows
            assert loop.time() - last_message < 5
            await asyncio.sleep(0.05)
        while (await states()).get("silent") != "stale":
            # liveness is judged at read time from the last message: grace (2 s) + slack
            assert loop.time() - last_message < 2 + 1.5, "stale within the grace period"
            await asyncio.sleep(0.1)
        assert (await states())["live"] == "live"
    finally:
        await live.stop()
        await silent.stop()


async def test_failing_over_to_a_replica_that_is_behind_never_moves_a_client_backwards(
    fleet: Fleet,
) -> None:
    r0 = fleet.start("r0")
    # r1 has no source and reads the store only every 30 s: it lags behind r0.
    r1 = fleet.start("r1", policy_dir=None, extra=["--poll", "30"])
    client, rec = make_client(fleet.tmp, "c0", [r0.target, r1.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "rev 1")
        fleet.write_policy(bundle_yaml(reason="only r0 knows yet"))
        await eventually(lambda: client.status.revision == 2, 10, "rev 2 via r0")
        r0.kill()
        await eventually(
            lambda: client.target == r1.target and client.status.connected, 10, "on r1"
        )
        _, ready = await ahttp("GET", r1.url + "/readyz")
        assert ready["revision"] < 2, "r1 really is behind"
        await asyncio.sleep(0.5)
        assert rec.revisions == [1, 2], "never offered an older revision"
        assert client.status.revision == 2 and client.nacks == 0
    finally:
        await client.stop()
