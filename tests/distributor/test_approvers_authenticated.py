"""Approvers are who the cluster says they are: their own token, TokenReview + SAR.

A real kube-apiserver; a real distributor process with a kubeconfig holding only
the chart's ``palisade-distributor-approvers`` rules and an admin token; people
are ServiceAccounts with tokens the API server issued, given the chart's
``palisade-approver`` ClusterRole (or not); every answer goes through the real
``palisade approvals`` command line; a real client holds the waiting calls.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from palisade.distribution import DistributionClient
from palisade.v1 import distribution_pb2
from tests.distributor.approver_people import People, people
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import Replica, acli, ahttp, eventually, make_client
from tests.distributor.test_operations import check_request

pytestmark = pytest.mark.e2e

__all__ = ["people"]  # the fixture

ADMIN = "the-shared-admin-token"


def _start(fleet: Fleet, people: People, name: str = "r0") -> Replica:
    admin = fleet.tmp / "admin.token"
    admin.write_text(ADMIN + "\n")
    extra = [*people.distributor_args(fleet.tmp), "--admin-token-file", str(admin)]
    return fleet.start(name, extra=extra)


async def _client(fleet: Fleet, replica: Replica, cid: str, namespace: str = "payments") -> Any:
    client, _ = make_client(fleet.tmp, cid, [replica.target], fleet.trusted, server="github-mcp")
    client.identity.namespace = namespace  # believed: this replica does not check subscribers
    await client.start()
    await eventually(lambda: client.status.connected, 10, f"{cid} connected")
    return client


async def _ask(
    client: DistributionClient, replica: Replica, title: str, approvers: int = 0
) -> tuple[str, str]:
    """A held call, as the sidecar asks for it; (approval id, call digest) once stored."""
    req, digest = check_request(title)
    approval_id = f"apr-{uuid.uuid4().hex[:8]}"
    ask = distribution_pb2.ApprovalRequest(
        approval_id=approval_id,
        call=req,
        rule_id="issues",
        call_digest=digest,
        approvers=approvers,
    )
    await client._send(distribution_pb2.SubscribeRequest(approval_request=ask))
    await _row(replica, approval_id)
    return approval_id, digest


async def _row(replica: Replica, approval_id: str) -> dict[str, Any]:
    for _ in range(100):
        status, body = await ahttp("GET", replica.url + "/v1/approvals", token=ADMIN)
        assert status == 200, body
        found = [a for a in body["approvals"] if a["id"] == approval_id]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError(f"{approval_id} never stored")


async def _answer(replica: Replica, verb: str, approval_id: str, *auth: str) -> Any:
    return await acli("approvals", verb, approval_id, "--url", replica.url, *auth)


async def _no_answer(client: DistributionClient, approval_id: str) -> None:
    await asyncio.sleep(1.0)  # several store polls: nothing was delivered
    assert client.approvals.get(approval_id) is None


async def _audit(replica: Replica) -> list[dict[str, Any]]:
    out = await acli(
        "audit", "query", "--kind", "approval", "-o", "json", "--url", replica.url,
        env={"PALISADE_ADMIN_TOKEN": ADMIN},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    records: list[dict[str, Any]] = json.loads(out.stdout)
    return records


async def test_a_token_without_the_approve_verb_is_refused_and_the_call_stays_waiting(
    fleet: Fleet, people: People
) -> None:
    replica = _start(fleet, people)
    mallory = people.person("mallory")
    client = await _client(fleet, replica, "side-1")
    try:
        approval_id, _ = await _ask(client, replica, "restart payments-api")
        for verb in ("approve", "deny"):
            out = await _answer(replica, verb, approval_id, "--token", mallory, "--by", "alice")
            assert out.returncode == 1
            assert "HTTP 403" in out.stderr
            assert f"{people.username('mallory')} may not {verb}" in out.stderr
        # the shared admin token reads the approvals, but is nobody: it cannot answer
        admin_file = fleet.tmp / "admin.token"
        out = await _answer(replica, "approve", approval_id, "--token-file", str(admin_file))
        assert out.returncode == 1 and "HTTP 401" in out.stderr
        assert "admin token cannot answer" in out.stderr
        body = {"decision": "approve", "by": "alice"}
        url = f"{replica.url}/v1/approvals/{approval_id}"
        assert (await ahttp("POST", url, body, token=ADMIN))[0] == 401
        assert (await ahttp("POST", url, body))[0] == 401
        assert (await ahttp("POST", url, body, token="not-a-token"))[0] == 401
        row = await _row(replica, approval_id)
        assert (row["status"], row["votes"]) == ("pending", [])
        await _no_answer(client, approval_id)
        assert await _audit(replica) == []
        # listing too takes a person's token (the list verb) when it is not the admin's
        out = await acli("approvals", "list", "--url", replica.url, "--token", mallory)
        assert out.returncode == 1 and "HTTP 403" in out.stderr
    finally:
        await client.stop()


async def test_an_authorised_persons_approval_lets_exactly_that_call_through_and_names_them(
    fleet: Fleet, people: People, tmp_path: Path
) -> None:
    replica = _start(fleet, people)
    alice = people.person("alice")
    people.may_approve("alice")
    alice_name = people.username("alice")
    client = await _client(fleet, replica, "side-2")
    try:
        approval_id, digest = await _ask(client, replica, "restart payments-api")
        other_id, other_digest = await _ask(client, replica, "delete everything")
        # as kubectl would: the kubeconfig's current user; --by is not who decides
        cfg = people.kubeconfig_of(tmp_path, "alice", alice)
        out = await _answer(
            replica, "approve", approval_id, "--kubeconfig", str(cfg), "--by", "mallory",
            "--comment", "on call, checked",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"approved by {alice_name}" in out.stdout
        async with asyncio.timeout(10):
            decision = await client.approvals.wait(approval_id)
        assert decision.approved
        assert list(decision.approvers) == [alice_name] and decision.by == alice_name
        assert client.approvals.consume(other_digest) is None, "only the approved call"
        assert client.approvals.consume(digest) is not None
        assert client.approvals.consume(digest) is None, "once"
        assert (await _row(replica, other_id))["status"] == "pending"
        await _no_answer(client, other_id)

        records = await _audit(replica)
        assert [(r["by"], r["details"]["decision"]) for r in records] == [(alice_name, "approved")]
        details = records[0]["details"]
        assert details["approver"]["username"] == alice_name
        assert details["approver"]["authenticated"] is True
        assert "system:serviceaccounts" in details["approver"]["groups"]
        assert f"system:serviceaccounts:{people.ns}" in details["approver"]["groups"]
        assert [a["username"] for a in details["approvers"]] == [alice_name]
        assert details["comment"] == "on call, checked"
        assert "mallory" not in json.dumps(records)
        # alice may list what waits, with her own token from the environment
        out = await acli(
            "approvals", "list", "-o", "json", "--url", replica.url,
            env={"PALISADE_TOKEN": alice},
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert [a["id"] for a in json.loads(out.stdout)] == [other_id]
    finally:
        await client.stop()


async def test_a_namespaced_approver_answers_only_calls_of_pods_in_that_namespace(
    fleet: Fleet, people: People
) -> None:
    replica = _start(fleet, people)
    bob = people.person("bob")
    people.may_approve("bob", namespace="payments")
    payments = await _client(fleet, replica, "side-payments", "payments")
    billing = await _client(fleet, replica, "side-billing", "billing")
    try:
        theirs, _ = await _ask(billing, replica, "refund")
        ours, _ = await _ask(payments, replica, "restart payments-api")
        out = await _answer(replica, "approve", theirs, "--token", bob)
        assert out.returncode == 1 and "HTTP 403" in out.stderr
        assert "in namespace billing" in out.stderr
        out = await _answer(replica, "approve", ours, "--token", bob)
        assert out.returncode == 0, out.stderr
        async with asyncio.timeout(10):
            assert (await payments.approvals.wait(ours)).approved
        assert (await _row(replica, theirs))["status"] == "pending"
        await _no_answer(billing, theirs)
    finally:
        await payments.stop()
        await billing.stop()


async def test_two_approvers_need_two_different_people_and_one_denial_denies(
    fleet: Fleet, people: People
) -> None:
    replica = _start(fleet, people)
    tokens = {name: people.person(name) for name in ("carol", "dave", "erin")}
    for name in tokens:
        people.may_approve(name)
    carol, dave, erin = (people.username(n) for n in ("carol", "dave", "erin"))
    client = await _client(fleet, replica, "side-3")
    try:
        approval_id, digest = await _ask(client, replica, "drop the cache", approvers=2)
        out = await _answer(replica, "approve", approval_id, "--token", tokens["carol"])
        assert out.returncode == 0, out.stderr
        assert "1 of 2 approvers so far" in out.stdout
        row = await _row(replica, approval_id)
        assert (row["status"], row["required"], row["approvers"]) == ("pending", 2, [carol])
        await _no_answer(client, approval_id)
        # the same person again, with a fresh token: still one person
        again = people.token("carol")
        out = await _answer(replica, "approve", approval_id, "--token", again)
        assert out.returncode == 1 and "HTTP 409" in out.stderr
        assert "already approved" in out.stderr
        assert (await _row(replica, approval_id))["status"] == "pending"
        await _no_answer(client, approval_id)

        out = await _answer(replica, "approve", approval_id, "--token", tokens["dave"])
        assert out.returncode == 0, out.stderr
        assert f"approved by {carol}, {dave}" in out.stdout
        async with asyncio.timeout(10):
            decision = await client.approvals.wait(approval_id)
        assert decision.approved and list(decision.approvers) == [carol, dave]
        assert client.approvals.consume(digest) is not None

        # a denial by anyone denies, whatever approvals came before
        denied_id, denied_digest = await _ask(client, replica, "drop the table", approvers=2)
        out = await _answer(replica, "approve", denied_id, "--token", tokens["carol"])
        assert out.returncode == 0, out.stderr
        out = await _answer(replica, "deny", denied_id, "--token", tokens["erin"])
        assert out.returncode == 0, out.stderr
        assert f"denied by {erin}" in out.stdout
        async with asyncio.timeout(10):
            refused = await client.approvals.wait(denied_id)
        assert not refused.approved and refused.by == erin
        assert client.approvals.consume(denied_digest) is None
        out = await _answer(replica, "approve", denied_id, "--token", tokens["dave"])
        assert out.returncode == 1 and "already denied" in out.stderr

        records = await _audit(replica)
        mine = [r for r in records if r["details"]["approval_id"] == approval_id]
        assert [(r["by"], r["details"]["decision"]) for r in mine] == [
            (carol, "pending"),
            (dave, "approved"),
        ]
        assert [a["username"] for a in mine[-1]["details"]["approvers"]] == [carol, dave]
        assert mine[-1]["details"]["required"] == 2
        theirs = [r for r in records if r["details"]["approval_id"] == denied_id]
        assert [(r["by"], r["details"]["decision"]) for r in theirs] == [
            (carol, "pending"),
            (erin, "denied"),
        ]
    finally:
        await client.stop()


def test_without_a_kubernetes_api_or_the_dev_flag_no_answer_is_accepted(fleet: Fleet) -> None:
    """A laptop distributor fails closed, and says how to open it."""
    import urllib.request

    replica = fleet.start("laptop")
    req = urllib.request.Request(
        f"{replica.url}/v1/approvals/apr-1",
        data=json.dumps({"decision": "approve", "by": "alice"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 503
    assert "--insecure-approvers" in json.loads(refused.value.read())["error"]
    assert "approval answers will be refused" in replica.log_path.read_text()
    dev = fleet.start("laptop-dev", extra=["--insecure-approvers"])
    assert "INSECURE APPROVERS" in dev.log_path.read_text()
