"""Operators at work: approvals round-trip, rollback, fleet and audit from the real CLI."""

from __future__ import annotations

import asyncio
import json

from google.protobuf import struct_pb2

from palisade.distribution import call_digest
from palisade.v1 import policy_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import acli, ahttp, bundle_yaml, eventually, make_client


def check_request(title: str) -> tuple[policy_pb2.CheckRequest, str]:
    args = struct_pb2.Struct()
    args.update({"repo": "payments", "title": title})
    req = policy_pb2.CheckRequest(
        agent="sre-agent-payments",
        server="github-mcp",
        tool="create_issue",
        arguments=args,
        session="s1",
    )
    digest = call_digest(
        agent=req.agent,
        server=req.server,
        tool=req.tool,
        arguments={"repo": "payments", "title": title},
        session="s1",
    )
    return req, digest


async def test_an_approval_asked_on_one_replica_and_answered_on_another_reaches_the_sidecar(
    fleet: Fleet,
) -> None:
    # a laptop distributor: answers name whoever --by says (test_approvers_authenticated.py
    # has the authenticated kind)
    r0 = fleet.start("r0", extra=["--insecure-approvers"])
    r1 = fleet.start("r1", extra=["--insecure-approvers"])
    client, _ = make_client(fleet.tmp, "side", [r0.target], fleet.trusted, server="github-mcp")
    await client.start()
    try:
        await eventually(lambda: client.status.connected, 10, "connected")
        req, digest = check_request("restart payments-api")
        approval_id = await client.request_approval(
            req, call_digest=digest, tenant="payments", rule_id="issues", reason="a human decides"
        )
        pending: list[dict[str, object]] = []
        for _ in range(100):
            out = await acli("approvals", "list", "-o", "json", "--url", r1.url)
            assert out.returncode == 0, out.stderr
            pending = json.loads(out.stdout)
            if pending:
                break
            await asyncio.sleep(0.1)
        assert [p["id"] for p in pending] == [approval_id]
        assert pending[0]["tool"] == "create_issue"
        assert pending[0]["arguments"] == {"repo": "payments", "title": "restart payments-api"}

        out = await acli(
            "approvals",
            "approve",
            approval_id,
            "--by",
            "alice",
            "--comment",
            "on call, ok",
            "--url",
            r1.url,
        )
        assert out.returncode == 0, out.stderr
        assert "approved by alice" in out.stdout
        async with asyncio.timeout(10):
            decision = await client.approvals.wait(approval_id)
        assert decision.approved and decision.by == "alice"
        assert decision.call_digest == digest

        _, other_digest = check_request("delete everything")
        assert client.approvals.consume(other_digest) is None, "bound to the same call"
        assert client.approvals.consume(digest) is not None, "the identical retry passes"
        assert client.approvals.consume(digest) is None, "once"

        again = await acli("approvals", "deny", approval_id, "--by", "bob", "--url", r1.url)
        assert again.returncode == 1
        assert "already approved" in again.stderr

        req2, digest2 = check_request("another")
        id2 = await client.request_approval(req2, call_digest=digest2)
        for _ in range(100):
            out = await acli("approvals", "deny", id2, "--by", "bob", "--url", r0.url)
            if out.returncode == 0:
                break
            await asyncio.sleep(0.1)
        async with asyncio.timeout(10):
            denied = await client.approvals.wait(id2)
        assert not denied.approved
        assert client.approvals.consume(digest2) is None

        out = await acli("audit", "query", "--kind", "approval", "-o", "json", "--url", r0.url)
        assert out.returncode == 0, out.stderr
        records = json.loads(out.stdout)
        assert [(r["by"], r["details"]["decision"]) for r in records] == [
            ("alice", "approved"),
            ("bob", "denied"),
        ]
        assert records[0]["details"]["comment"] == "on call, ok"
    finally:
        await client.stop()


async def test_rollback_republishes_an_old_revision_as_a_new_one_and_the_fleet_converges(
    fleet: Fleet,
) -> None:
    r0 = fleet.start("r0")
    r1 = fleet.start("r1")
    clients = []
    for i in range(6):
        c, rec = make_client(fleet.tmp, f"c{i}", [(r0, r1)[i % 2].target], fleet.trusted)
        await c.start()
        clients.append((c, rec))
    try:
        await eventually(lambda: all(c.status.revision == 1 for c, _ in clients), 15, "rev 1")
        digest1 = clients[0][0].status.digest
        fleet.write_policy(bundle_yaml(reason="a change we regret"))
        await eventually(lambda: all(c.status.revision == 2 for c, _ in clients), 15, "rev 2")
        out = await acli("bundle", "rollback", "--to", "1", "--by", "bob", "--url", r1.url)
        assert out.returncode == 0, out.stderr
        assert "re-published as revision 3" in out.stdout
        await eventually(lambda: all(c.status.revision == 3 for c, _ in clients), 15, "rev 3")
        assert all(c.status.digest == digest1 for c, _ in clients), "revision 1's content"
        assert all(rec.revisions == [1, 2, 3] for _, rec in clients)
        await asyncio.sleep(1.0)
        assert all(c.status.revision == 3 for c, _ in clients), "sources did not undo it"

        out = await acli("fleet", "bundles", "-o", "json", "--url", r0.url)
        body = json.loads(out.stdout)
        top = body["bundles"][0]
        assert (top["revision"], top["origin"], top["author"]) == (3, "rollback:1", "bob")
        assert [b["revision"] for b in body["bundles"]] == [3, 2, 1], "history never rewritten"

        fleet.write_policy(bundle_yaml(reason="the fixed change"))
        await eventually(lambda: all(c.status.revision == 4 for c, _ in clients), 15, "rev 4")

        missing = await acli("bundle", "rollback", "--to", "99", "--url", r0.url)
        assert missing.returncode == 1 and "no revision 99" in missing.stderr
    finally:
        for c, _ in clients:
            await c.stop()


async def test_the_fleet_command_shows_sidecars_and_node_agents_for_people_and_scripts(
    fleet: Fleet,
) -> None:
    from palisade.v1 import distribution_pb2

    r0 = fleet.start("r0")
    side, _ = make_client(
        fleet.tmp, "side-1", [r0.target], fleet.trusted, counters=lambda: {"calls": 7.0}
    )
    node, _ = make_client(
        fleet.tmp,
        "gpu-node-1",
        [r0.target],
        fleet.trusted,
        kind=distribution_pb2.CLIENT_KIND_NODE_AGENT,
        summary=lambda: {"gpus": 8, "violations": 1},
    )
    await side.start()
    await node.start()
    try:
        await eventually(lambda: side.status.revision == node.status.revision == 1, 10, "up")

        async def sidecars() -> list[dict[str, object]]:
            out = await acli("fleet", "sidecars", "-o", "json", "--url", r0.url)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)  # type: ignore[no-any-return]

        rows: list[dict[str, object]] = []
        for _ in range(100):
            rows = await sidecars()
            if rows and rows[0]["counters"] == {"calls": 7.0}:
                break
            await asyncio.sleep(0.1)
        assert [r["id"] for r in rows] == ["side-1"]
        assert rows[0]["revision"] == 1 and rows[0]["state"] == "live"
        assert rows[0]["replica"] == "r0"

        table = await acli("fleet", "nodes", "--url", r0.url)
        assert table.returncode == 0, table.stderr
        assert "node-1" in table.stdout and "live" in table.stdout
        assert "side-1" not in table.stdout

        overview = await acli("fleet", "--url", r0.url)
        assert overview.returncode == 0, overview.stderr
        assert "sidecars (1)" in overview.stdout and "node agents (1)" in overview.stdout
        assert "bundles" in overview.stdout
        whole = json.loads((await acli("fleet", "-o", "json", "--url", r0.url)).stdout)
        assert [c["id"] for c in whole["nodes"]] == ["gpu-node-1"]
        assert whole["bundles"][0]["revision"] == 1

        status, body = await ahttp("GET", r0.url + "/v1/fleet?kind=node")
        assert status == 200 and [r["id"] for r in body["clients"]] == ["gpu-node-1"]
        assert body["clients"][0]["summary"] == {"gpus": 8, "violations": 1}
    finally:
        await side.stop()
        await node.stop()


async def test_the_http_api_requires_the_admin_token_when_one_is_configured(
    fleet: Fleet,
) -> None:
    token_file = fleet.tmp / "token"
    token_file.write_text("s3cret-token\n")
    r0 = fleet.start("r0", extra=["--admin-token-file", str(token_file)])
    status, body = await ahttp("GET", r0.url + "/v1/bundles")
    assert status == 401
    status, _ = await ahttp("GET", r0.url + "/v1/bundles", token="wrong")
    assert status == 401
    status, body = await ahttp("GET", r0.url + "/v1/bundles", token="s3cret-token")
    assert status == 200
    out = await acli("fleet", "bundles", "--url", r0.url, "--token-file", str(token_file))
    assert out.returncode == 0, out.stderr
    denied = await acli("fleet", "bundles", "--url", r0.url)
    assert denied.returncode == 1 and "401" in denied.stderr
    assert "s3cret" not in denied.stderr
    status, _ = await ahttp("GET", r0.url + "/healthz")
    assert status == 200
    status, body = await ahttp(
        "POST", r0.url + "/v1/bundles/rollback", {"to": "one"}, token="s3cret-token"
    )
    assert status == 400 and "positive" in body["error"]


async def test_audit_query_filters_by_agent_tool_decision_and_time(fleet: Fleet) -> None:
    from palisade.audit import to_proto
    from tests.distributor.signed_audit import Chain

    r0 = fleet.start("r0")
    chain = Chain("side")
    client, _ = make_client(
        fleet.tmp, "side", [r0.target], fleet.trusted, audit_keys=(chain.key(),)
    )
    await client.start()
    rows = [
        ("sre", "pods_log", policy_pb2.DECISION_ALLOW, 1_000.0),
        ("sre", "resources_delete", policy_pb2.DECISION_DENY, 2_000.0),
        ("ops", "pods_log", policy_pb2.DECISION_DENY, 3_000.0),
        ("sre", "resources_delete", policy_pb2.DECISION_REQUIRE_APPROVAL, 4_000.0),
    ]
    records = []
    for seq, (agent, tool, decision, when) in enumerate(rows, start=1):
        name = policy_pb2.Decision.Name(decision).removeprefix("DECISION_").lower()
        record = chain.record(
            time_s=when, agent=agent, tool=tool, decision=name, reason=f"reason {seq}"
        )
        records.append(to_proto(record))
    client.record_audit(records)
    try:
        await eventually(lambda: client.spool.pending_bytes() == 0, 10, "audit shipped")

        async def query(*args: str) -> list[int]:
            out = await acli(
                "audit", "query", "--kind", "decision", "-o", "json", "--url", r0.url, *args
            )
            assert out.returncode == 0, out.stderr
            return [int(r["seq"]) for r in json.loads(out.stdout)]

        assert await query() == [1, 2, 3, 4]
        assert await query("--agent", "sre") == [1, 2, 4]
        assert await query("--tool", "resources_delete", "--decision", "deny") == [2]
        assert await query("--decision", "require_approval") == [4]
        assert await query("--since", "1500", "--until", "3500") == [2, 3]
        assert await query("--since", "1970-01-01T00:50:01Z") == [4]
        table = await acli("audit", "query", "--agent", "ops", "--url", r0.url)
        assert table.returncode == 0 and "reason 3" in table.stdout
        bad = await acli("audit", "query", "--since", "yesterday-ish", "--url", r0.url)
        assert bad.returncode == 2 and "not a time" in bad.stderr
    finally:
        await client.stop()
