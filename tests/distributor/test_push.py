"""Pushing bundles: several replicas, many clients, ACKs, bad input, unverifiable bundles."""

from __future__ import annotations

import asyncio

from palisade.distribution import State, TrustedKeys
from palisade.v1 import distribution_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import acli, ahttp, bundle_yaml, eventually, make_client, write_key


async def test_a_bundle_change_reaches_every_client_on_every_replica_and_is_acked(
    fleet: Fleet,
) -> None:
    replicas = [fleet.start(f"r{i}") for i in range(3)]
    clients = []
    for i in range(30):
        targets = [replicas[i % 3].target]
        client, rec = make_client(fleet.tmp, f"c{i}", targets, fleet.trusted)
        clients.append((client, rec))
        await client.start()
    try:
        await eventually(lambda: all(c.status.revision == 1 for c, _ in clients), 15, "rev 1")
        fleet.write_policy(bundle_yaml(reason="changed"))
        await eventually(lambda: all(c.status.revision == 2 for c, _ in clients), 15, "rev 2")
        digests = {c.status.digest for c, _ in clients}
        assert len(digests) == 1, "every replica signs the same scoped document"
        assert all(rec.revisions == [1, 2] for _, rec in clients)

        async def all_acked() -> bool:
            _, body = await ahttp("GET", replicas[0].url + "/v1/bundles")
            top = body["bundles"][0]
            return bool(top["revision"] == 2 and top["subscribers"] == 30)

        for _ in range(100):
            if await all_acked():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("fleet API never showed 30 ACKs of revision 2")
    finally:
        for c, _ in clients:
            await c.stop()


async def test_an_invalid_bundle_never_ships_and_the_error_names_file_line_and_field(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    client, rec = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "rev 1")
        fleet.write_policy(bundle_yaml().replace("decision: allow", "decision: perhaps"))

        async def error_reported() -> dict[str, object] | None:
            _, body = await ahttp("GET", replica.url + "/v1/bundles")
            return body["last_error"]  # type: ignore[no-any-return]

        err = None
        for _ in range(100):
            err = await error_reported()
            if err:
                break
            await asyncio.sleep(0.1)
        assert err, "the compile error is visible through the fleet API"
        first = err["errors"][0]  # type: ignore[index]
        assert first["file"] == "payments.yaml"
        assert first["field"] == "spec.rules[0].decision"
        assert first["line"] == 25
        assert "perhaps" in first["message"]
        shown = await acli("fleet", "bundles", "--url", replica.url)
        assert shown.returncode == 0
        assert "payments.yaml:25: spec.rules[0].decision" in shown.stderr
        await asyncio.sleep(0.5)
        assert rec.revisions == [1], "no client was sent anything"
        assert client.nacks == 0
        _, body = await ahttp("GET", replica.url + "/v1/bundles")
        assert [b["revision"] for b in body["bundles"]] == [1]
    finally:
        await client.stop()


async def test_a_bundle_the_client_cannot_verify_is_nacked_and_the_last_good_one_kept(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    client, rec = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "rev 1")
    finally:
        await client.stop()
    # The distributor rotates to a key this client does not trust yet.
    replica.stop()
    rogue = write_key(fleet.tmp / "rogue.pem")
    fleet.write_policy(bundle_yaml(reason="signed by an unknown key"))
    replica2 = fleet.start("r1", keys=[fleet.tmp / "rogue.pem"])
    client2, _rec2 = make_client(fleet.tmp, "c0", [replica2.target], fleet.trusted, recorder=rec)
    await client2.start()
    try:
        assert client2.status.state is State.OK, "last-known-good loaded from disk"
        await eventually(lambda: client2.nacks >= 1, 10, "a NACK")
        assert client2.status.revision == 1
        assert client2.status.state is State.OK
        assert "no valid signature" in client2.status.last_error

        async def nack_visible() -> bool:
            _, body = await ahttp("GET", replica2.url + "/v1/fleet?kind=sidecar")
            rows = body["clients"]
            return bool(rows and rows[0]["nack_revision"] == 2 and rows[0]["revision"] == 1)

        for _ in range(100):
            if await nack_visible():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the NACK and its error never showed in the fleet API")
    finally:
        await client2.stop()
    # A client that trusts both keys (rotation) accepts the new bundle.
    both = TrustedKeys([fleet.key.public_key(), rogue.public_key()])
    client3, _rec3 = make_client(fleet.tmp, "c0", [replica2.target], both, recorder=rec)
    await client3.start()
    try:
        await eventually(lambda: client3.status.revision == 2, 10, "rev 2 after rotation")
    finally:
        await client3.stop()


async def test_a_client_that_already_holds_the_revision_resumes_without_a_resend(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    client, _rec = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    await eventually(lambda: client.status.revision == 1, 10, "rev 1")
    await client.stop()
    client2, rec2 = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client2.start()
    try:
        assert rec2.revisions == [1], "activated from last-known-good"
        await eventually(lambda: client2.status.connected, 10, "connected")
        await asyncio.sleep(0.3)
        assert client2.acks == 0, "nothing was pushed: the server answered up_to_date"
        assert rec2.revisions == [1]
    finally:
        await client2.stop()


async def test_a_node_agent_gets_tenant_quotas_and_a_sidecar_only_its_server(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    side, srec = make_client(fleet.tmp, "s", [replica.target], fleet.trusted)
    node, nrec = make_client(
        fleet.tmp,
        "n",
        [replica.target],
        fleet.trusted,
        kind=distribution_pb2.CLIENT_KIND_NODE_AGENT,
    )
    await side.start()
    await node.start()
    try:
        await eventually(lambda: bool(srec.activated and nrec.activated), 10, "both activated")
        sspec = srec.activated[-1].document["spec"]
        assert [s["name"] for s in sspec["servers"]] == ["kubernetes-mcp"]
        assert [r["id"] for r in sspec["rules"]] == ["allow-reads"]
        assert "gpuQuota" not in sspec["tenants"][0]
        nspec = nrec.activated[-1].document["spec"]
        assert set(nspec) == {"tenants"}
        assert nspec["tenants"][0]["gpuQuota"]["gpus"] == 2
        assert srec.activated[-1].revision == nrec.activated[-1].revision == 1
    finally:
        await side.stop()
        await node.stop()
