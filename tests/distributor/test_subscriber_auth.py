"""Subscribers prove who they are: pod-bound ServiceAccount tokens, TokenReview.

A real kube-apiserver (tests/harness), a real distributor process started with the
chart's ``--subscriber-auth`` arguments and a kubeconfig holding only the rights the
chart's ClusterRole gives it, and real gRPC clients sending tokens the API server
issued for real pods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from palisade.audit import to_proto
from palisade.bundle import public_key_pem
from palisade.distribution import DistributionClient
from palisade.v1 import distribution_pb2, distribution_pb2_grpc
from tests.chart.render import one, render
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import Replica, ahttp, cli, eventually, make_client
from tests.distributor.signed_audit import Chain
from tests.distributor.test_operations import check_request
from tests.harness.commands import kubeconfig
from tests.harness.controlplane import ControlPlane
from tests.harness.peers import free_port, stop
from tests.harness.process import dying_with_parent
from tests.sidecar.fleet.conftest import make_world

pytestmark = pytest.mark.e2e

NS = "subscriber-auth"
AUDIENCE = "palisade-distributor"
DIST_SA = "distributor"
NODE_AGENT_SA = "nodeagent"


@dataclass
class Pods:
    kube: ControlPlane
    uids: dict[str, str]

    def token(self, pod: str, *, sa: str = "mcp", audience: str = AUDIENCE) -> str:
        """A token of ``sa`` bound to ``pod``, as the kubelet projects it."""
        spec = {
            "audiences": [audience],
            "expirationSeconds": 3600,
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": pod,
                "uid": self.uids[pod],
            },
        }
        out = self.kube.request(
            "POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token", {"spec": spec}
        )
        return str(out["status"]["token"])

    def unbound_token(self, sa: str = "mcp") -> str:
        out = self.kube.request(
            "POST",
            f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}/token",
            {"spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600}},
        )
        return str(out["status"]["token"])


def _pod(name: str, sa: str, node: str, labels: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "serviceAccountName": sa,
            "nodeName": node,
            "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "example.invalid/mcp:1"}],
        },
    }


@pytest.fixture(scope="module")
def pods(kube: ControlPlane) -> Iterator[Pods]:
    kube.create_namespace(NS)
    for sa in ("mcp", "plain", NODE_AGENT_SA, DIST_SA):
        kube.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts", {"metadata": {"name": sa}})
    server = {"palisade.dev/mcp-server": "kubernetes-mcp"}
    uids = {}
    for body in (
        _pod("mcp-a", "mcp", "node-1", server),
        _pod("mcp-b", "mcp", "node-2", server),
        _pod("plain", "plain", "node-1"),
        _pod("agent-7", NODE_AGENT_SA, "node-7"),
    ):
        made = kube.request("POST", f"/api/v1/namespaces/{NS}/pods", body)
        uids[made["metadata"]["name"]] = made["metadata"]["uid"]
    # Exactly the rules the chart gives its distributor for this, nothing more.
    role = one(render(), "ClusterRole", "palisade-distributor-subscribers")
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        {"metadata": {"name": "test-distributor-subscribers"}, "rules": role["rules"]},
    )
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        {
            "metadata": {"name": "test-distributor-subscribers"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "test-distributor-subscribers",
            },
            "subjects": [{"kind": "ServiceAccount", "name": DIST_SA, "namespace": NS}],
        },
    )
    try:
        yield Pods(kube, uids)
    finally:
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        for kind in ("clusterrolebinding", "clusterrole"):
            kube.kubectl("delete", kind, "test-distributor-subscribers", check=False)


def _auth_args(tmp: Path, pods: Pods, name: str) -> list[str]:
    """The chart's subscriber arguments, with a kubeconfig of the distributor's account."""
    kube = pods.kube
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts/{DIST_SA}/token",
        {"spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    cfg = tmp / f"{name}.kubeconfig"
    cfg.write_text(yaml.safe_dump(kubeconfig(kube.server, kube.ca_pem, token, user=DIST_SA)))
    return [
        "--subscriber-auth=token-review",
        f"--subscriber-audience={AUDIENCE}",
        f"--node-agent-service-account={NS}:{NODE_AGENT_SA}",
        f"--kubeconfig={cfg}",
    ]


def _distributor(fleet: Fleet, pods: Pods, name: str = "auth") -> Replica:
    return fleet.start(name, extra=_auth_args(fleet.tmp, pods, name))


def _with_token(client: DistributionClient, path: Path, token: str) -> DistributionClient:
    path.write_text(token)
    client.settings = dataclasses.replace(client.settings, token_file=path)
    return client


async def _fleet_rows(replica: Replica, *ids: str) -> dict[str, dict[str, object]]:
    """The fleet by id, once every one of ``ids`` is in it (rows are flushed every second)."""
    rows: dict[str, dict[str, object]] = {}
    for _ in range(50):
        _, body = await ahttp("GET", replica.url + "/v1/fleet?all=1")
        rows = {c["id"]: c for c in body["clients"]}
        if all(i in rows for i in ids):
            break
        await asyncio.sleep(0.1)
    return rows


async def _raw_subscribe(target: str, token: str, cid: str) -> grpc.StatusCode:
    """One Subscribe with a Hello as ``cid``: the status it ends with (OK when it is served)."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        call = stub.Subscribe(metadata=metadata)
        identity = distribution_pb2.ClientIdentity(
            kind=distribution_pb2.CLIENT_KIND_SIDECAR, id=cid, server="kubernetes-mcp"
        )
        try:
            await call.write(distribution_pb2.SubscribeRequest(hello={"identity": identity}))
            async with asyncio.timeout(10):
                resp = await call.read()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        call.cancel()
        assert resp is not grpc.aio.EOF
        return grpc.StatusCode.OK


async def test_without_a_valid_token_nothing_is_served_and_the_caller_is_told_why(
    fleet: Fleet, pods: Pods
) -> None:
    replica = _distributor(fleet, pods)
    t = replica.target
    assert await _raw_subscribe(t, "", "x") == grpc.StatusCode.UNAUTHENTICATED
    assert await _raw_subscribe(t, "not-a-token", "x") == grpc.StatusCode.UNAUTHENTICATED
    wrong_audience = pods.token("mcp-a", audience="someone-else")
    assert await _raw_subscribe(t, wrong_audience, "x") == grpc.StatusCode.UNAUTHENTICATED
    # Valid tokens of the wrong kind: not bound to a pod; a pod that is no MCP server.
    assert await _raw_subscribe(t, pods.unbound_token(), "x") == grpc.StatusCode.PERMISSION_DENIED
    plain = pods.token("plain", sa="plain")
    assert await _raw_subscribe(t, plain, "x") == grpc.StatusCode.PERMISSION_DENIED
    assert await _raw_subscribe(t, pods.token("mcp-a"), "x") == grpc.StatusCode.OK
    # A library client without a token never gets a bundle.
    client, rec = make_client(fleet.tmp, "tokenless", [t], fleet.trusted)
    await client.start()
    try:
        await asyncio.sleep(1.0)
        assert rec.revisions == [] and not client.status.connected
    finally:
        await client.stop()
    log = replica.log_path.read_text()
    assert "subscriber refused" in log
    assert "INSECURE SUBSCRIBERS" not in log


async def test_id_kind_and_scope_come_from_the_token_never_from_the_hello(
    fleet: Fleet, pods: Pods
) -> None:
    replica = _distributor(fleet, pods)
    # The pod claims another id, another server and to be a node agent.
    side, rec = make_client(
        fleet.tmp,
        "spoofed-id",
        [replica.target],
        fleet.trusted,
        kind=distribution_pb2.CLIENT_KIND_NODE_AGENT,
        server="github-mcp",
    )
    _with_token(side, fleet.tmp / "a.token", pods.token("mcp-a"))
    agent, agent_rec = make_client(
        fleet.tmp,
        "not-node-7",
        [replica.target],
        fleet.trusted,
        kind=distribution_pb2.CLIENT_KIND_SIDECAR,
    )
    _with_token(agent, fleet.tmp / "agent.token", pods.token("agent-7", sa=NODE_AGENT_SA))
    await side.start()
    await agent.start()
    try:
        await eventually(lambda: side.status.revision == 1, 15, "sidecar bundle")
        await eventually(lambda: agent.status.revision == 1, 15, "node agent bundle")
        servers = {s["name"] for s in rec.activated[0].document["spec"]["servers"]}
        assert servers == {"kubernetes-mcp"}, "the scope of the pod's label, not the Hello's"
        side_tenants = rec.activated[0].document["spec"].get("tenants", [])
        assert not any(t.get("gpuQuota") for t in side_tenants), "no node agent scope"
        tenants = agent_rec.activated[0].document["spec"]["tenants"]
        assert tenants[0]["gpuQuota"]["gpus"] == 2, "node agent scope: tenants with quotas"
        rows = await _fleet_rows(replica, pods.uids["mcp-a"], "node-7")
        a = rows[pods.uids["mcp-a"]]
        assert (a["kind"], a["server"], a["namespace"], a["pod"], a["node"]) == (
            "CLIENT_KIND_SIDECAR",
            "kubernetes-mcp",
            NS,
            "mcp-a",
            "node-1",
        )
        n = rows["node-7"]
        assert (n["kind"], n["node"]) == ("CLIENT_KIND_NODE_AGENT", "node-7")
        assert "spoofed-id" not in rows and "not-node-7" not in rows
    finally:
        await side.stop()
        await agent.stop()


async def test_another_pod_cannot_evict_the_subscriber_take_its_approvals_or_fake_its_acks(
    fleet: Fleet, pods: Pods
) -> None:
    # the answer's author is not the point here (test_approvers_authenticated.py)
    extra = [*_auth_args(fleet.tmp, pods, "auth"), "--insecure-approvers"]
    replica = fleet.start("auth", extra=extra)
    uid_a = pods.uids["mcp-a"]
    victim, _ = make_client(fleet.tmp, uid_a, [replica.target], fleet.trusted, server="github-mcp")
    _with_token(victim, fleet.tmp / "a.token", pods.token("mcp-a"))
    # The attacker holds a valid token, of its own pod, and names the victim's id.
    thief, thief_rec = make_client(fleet.tmp, uid_a, [replica.target], fleet.trusted)
    _with_token(thief, fleet.tmp / "b.token", pods.token("mcp-b"))
    await victim.start()
    try:
        await eventually(lambda: victim.status.revision == 1, 15, "victim bundle")
        await thief.start()
        await eventually(lambda: thief.status.revision == 1, 15, "thief connected as itself")
        await asyncio.sleep(0.5)
        assert victim.status.connected and victim.connects == 1, "never evicted"
        # A forged ACK of a revision the victim never had lands on the thief's own row.
        await thief._send(distribution_pb2.SubscribeRequest(ack={"revision": 99, "digest": "x"}))
        req, digest = check_request("open an incident")
        approval_id = await victim.request_approval(req, call_digest=digest, rule_id="issues")
        # The thief asks again under the victim's approval id: it gets nothing for it.
        await thief.request_approval(req, call_digest=digest, approval_id=approval_id)
        for _ in range(100):
            _, body = await ahttp("GET", replica.url + "/v1/approvals?status=pending")
            if body["approvals"]:
                break
            await asyncio.sleep(0.1)
        assert [a["client_id"] for a in body["approvals"]] == [uid_a]
        out = await asyncio.to_thread(
            cli, "approvals", "approve", approval_id, "--by", "alice", "--url", replica.url
        )
        assert out.returncode == 0, out.stderr
        async with asyncio.timeout(10):
            decision = await victim.approvals.wait(approval_id)
        assert decision.approved
        await asyncio.sleep(0.5)
        assert thief.approvals.consume(digest) is None, "the answer went to the victim only"
        await asyncio.sleep(1.2)  # a fleet flush
        rows = await _fleet_rows(replica)
        assert rows[uid_a]["revision"] == 1 and rows[uid_a]["connected"] is True
        assert rows[pods.uids["mcp-b"]]["revision"] == 99
        assert thief_rec.revisions == [1]
    finally:
        await thief.stop()
        await victim.stop()


async def test_the_token_file_is_read_again_on_every_connect(fleet: Fleet, pods: Pods) -> None:
    replica = _distributor(fleet, pods)
    client, rec = make_client(fleet.tmp, "rotating", [replica.target], fleet.trusted)
    path = fleet.tmp / "rotating.token"
    _with_token(client, path, "expired-or-garbage")
    await client.start()
    try:
        await asyncio.sleep(1.0)
        assert rec.revisions == []
        path.write_text(pods.token("mcp-a") + "\n")  # the kubelet rotated it
        await eventually(lambda: client.status.revision == 1, 15, "connected with the new token")
    finally:
        await client.stop()


async def test_audit_records_are_stored_under_the_authenticated_source_only(
    fleet: Fleet, pods: Pods
) -> None:
    replica = _distributor(fleet, pods)
    uid_a, uid_b = pods.uids["mcp-a"], pods.uids["mcp-b"]

    async def call(method: str, token: str, request: Any) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(replica.target) as channel:
            stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            try:
                await getattr(stub, method)(request, metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

    def batch(*records: dict[str, Any]) -> distribution_pb2.AuditBatch:
        return distribution_pb2.AuditBatch(
            identity=distribution_pb2.ClientIdentity(id=uid_a),
            records=[to_proto(r) for r in records],
        )

    def register(chain: Chain) -> distribution_pb2.RegisterAuditKeyRequest:
        return distribution_pb2.RegisterAuditKeyRequest(keys=[chain.key()])

    token_b = pods.token("mcp-b")
    as_a, as_b = Chain(f"sidecar/{uid_a}"), Chain(f"sidecar/{uid_b}")
    # a key is registered for the caller's own source only
    assert await call("RegisterAuditKey", "", register(as_b)) == grpc.StatusCode.UNAUTHENTICATED
    assert await call("RegisterAuditKey", token_b, register(as_a)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await call("RegisterAuditKey", token_b, register(as_b)) == grpc.StatusCode.OK
    assert await call("SendAudit", "", batch(as_a.record(tool="t"))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert await call("SendAudit", token_b, batch(as_a.record(tool="t"))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # a record naming no source is stored under the caller's (its hash covers source "")
    blank = Chain("", as_b.signer)
    first = blank.record(tool="t")
    as_b.seq, as_b.head = blank.seq, blank.head
    assert await call("SendAudit", token_b, batch(first)) == grpc.StatusCode.OK
    assert await call("SendAudit", token_b, batch(as_b.record(tool="t"))) == grpc.StatusCode.OK
    _, body = await ahttp("GET", replica.url + "/v1/audit?tool=t")
    assert sorted(int(r["seq"]) for r in body["records"]) == [1, 2]
    _, body = await ahttp("GET", replica.url + f"/v1/audit?source=sidecar/{uid_b}")
    assert sorted(int(r["seq"]) for r in body["records"]) == [1, 2]
    _, body = await ahttp("GET", replica.url + "/v1/audit/keys")
    assert [(k["source"], k["key_id"]) for k in body["keys"]] == [
        (f"sidecar/{uid_b}", as_b.signer.key_id)
    ]


def test_a_replica_on_a_public_address_will_not_start_without_subscriber_auth(
    fleet: Fleet,
) -> None:
    with pytest.raises(RuntimeError, match="without subscriber authentication"):
        fleet.start("public", extra=["--grpc-listen", "0.0.0.0:0"])
    ok = fleet.start("public-dev", extra=["--grpc-listen", "0.0.0.0:0", "--insecure-subscribers"])
    assert "INSECURE SUBSCRIBERS" in ok.log_path.read_text()


async def test_a_real_sidecar_process_joins_with_its_projected_token(
    tmp_path: Path, pods: Pods
) -> None:
    world = make_world(tmp_path, extra=_auth_args(tmp_path, pods, "world"))
    try:
        token = tmp_path / "sidecar.token"
        token.write_text(pods.token("mcp-a"))
        uid = pods.uids["mcp-a"]
        sc = world.start_sidecar(
            "mcp-a", "--client-id", uid, "--distributor-token-file", str(token)
        )
        await world.ready(sc, 1)
        row = None
        for _ in range(50):
            row = await world.distributor.sidecar(uid)
            if row is not None:
                break
            await asyncio.sleep(0.1)
        assert row is not None and row["pod"] == "mcp-a" and row["node"] == "node-1"
        tokenless = world.start_sidecar("no-token")
        await asyncio.sleep(2.0)
        status, doc = tokenless.readyz()
        assert status == 503 and doc.get("bundle_revision") != 1
    finally:
        world.close()


def _start_node_agent(
    tmp: Path, target: str, pub: Path, token: Path, port: int
) -> subprocess.Popen[bytes]:
    """``palisade nodeagent run`` claiming another node name, with its token file."""
    log = tmp / "agent.log"
    cmd = [
        sys.executable, "-m", "palisade.cli.main", "nodeagent", "run",
        "--node", "claims-another-node", "--backend", "none", "--kube", "off",
        "--distributor", target, "--trusted-key", str(pub),
        "--distributor-token-file", str(token),
        "--state-dir", str(tmp / "agent"), "--listen", f"127.0.0.1:{port}",
        "--heartbeat-interval", "0.5",
    ]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(dying_with_parent(cmd), stdout=out, stderr=subprocess.STDOUT)


async def test_a_real_node_agent_joins_with_its_projected_token(fleet: Fleet, pods: Pods) -> None:
    replica = _distributor(fleet, pods)
    pub = fleet.tmp / "trusted.pem"
    pub.write_bytes(public_key_pem(fleet.key.public_key()))
    token = fleet.tmp / "agent.token"
    token.write_text(pods.token("agent-7", sa=NODE_AGENT_SA))
    port = free_port()
    proc = _start_node_agent(fleet.tmp, replica.target, pub, token, port)

    def acked() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=3) as r:
                return '"bundleAcks": 1' in r.read().decode()
        except OSError:
            return False

    try:
        await eventually(acked, 30, "node agent ACKed a bundle")
        rows = await _fleet_rows(replica, "node-7")
        assert rows["node-7"]["kind"] == "CLIENT_KIND_NODE_AGENT"
        assert "claims-another-node" not in rows
    finally:
        stop(proc)
