"""The agent and a real gRPC DistributionService: quotas pushed in, heartbeats and audit out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import yaml

from palisade.bundle import from_document, generate_key, key_id, public_key_pem, sign_bundle
from palisade.v1 import distribution_pb2, distribution_pb2_grpc
from tests.distributor.helpers import ahttp, bundle_yaml, start_replica, write_key
from tests.nodeagent.test_daemon import EXAMPLE, Daemon, _get
from tests.nodeagent.test_trust import kubelet_publish

GIB = 2**30
G0 = "GPU-00000000-0000-0000-0000-000000000000"
UID = "00000001-0000-4000-8000-000000000000"


class Distributor(distribution_pb2_grpc.DistributionServiceServicer):  # type: ignore[misc]
    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.hellos: list[Any] = []
        self.acks: list[Any] = []
        self.heartbeats: list[Any] = []
        self.audit: list[Any] = []

    async def Subscribe(self, requests: Any, context: Any) -> Any:
        async for req in requests:
            kind = req.WhichOneof("msg")
            if kind == "hello":
                self.hellos.append(req.hello)
                yield distribution_pb2.SubscribeResponse(bundle=self.bundle)
            elif kind == "ack":
                self.acks.append(req.ack)
            elif kind == "heartbeat":
                self.heartbeats.append(req.heartbeat)

    async def SendAudit(self, request: Any, context: Any) -> Any:
        self.audit.extend(request.records)
        seq = max((r.seq for r in request.records), default=0)
        return distribution_pb2.AuditBatchAck(stored_through_seq=seq)


async def _until(pred: Any, what: str) -> None:
    for _ in range(300):
        if pred():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_pushed_quotas_are_enforced_and_heartbeats_carry_the_node_summary(
    tmp_path: Path,
) -> None:
    key = generate_key()
    # Mid-rotation: the signing key is the second of two in the file; both are trusted.
    (tmp_path / "trusted.pem").write_bytes(public_key_pem(generate_key()) + public_key_pem(key))
    doc = {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": "gpu"},
        "spec": {
            "tenants": [
                {
                    "name": "payments",
                    "namespaces": ["payments"],
                    "gpuQuota": {
                        "gpuMemoryBytes": 8 * GIB,
                        "enforcement": "report",
                        "gracePeriodSeconds": 0,
                    },
                }
            ]
        },
    }
    signed = sign_bundle(from_document(doc), [key], 42)
    scenario = {
        "gpus": [{"index": 0, "uuid": G0, "powerWatts": 300}],
        "namespaces": {"payments": {"palisade.dev/tenant": "payments"}},
        "pods": [
            {
                "uid": UID,
                "name": "api",
                "namespace": "payments",
                "containers": [{"name": "main", "id": f"containerd://{1:064x}"}],
            }
        ],
        "processes": [{"pid": 990002001, "gpu": 0, "pod": "api", "memoryGiB": 12}],
    }
    (tmp_path / "node.yaml").write_text(yaml.safe_dump(scenario))

    dist = Distributor(signed)
    server = grpc.aio.server()
    distribution_pb2_grpc.add_DistributionServiceServicer_to_server(dist, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    d = Daemon(
        tmp_path,
        "--backend",
        "sim",
        "--scenario",
        str(tmp_path / "node.yaml"),
        "--distributor",
        f"127.0.0.1:{port}",
        "--trusted-key",
        str(tmp_path / "trusted.pem"),
        "--heartbeat-interval",
        "0.3",
        "--interval",
        "0.2",
    )
    try:
        await asyncio.to_thread(d.wait_ready)
        await _until(lambda: dist.acks and len(dist.heartbeats) >= 2, "an ACK and heartbeats")
        assert dist.hellos[0].identity.kind == distribution_pb2.CLIENT_KIND_NODE_AGENT
        assert dist.hellos[0].identity.node == "test-node"
        assert dist.acks[0].revision == 42
        await _until(lambda: len(dist.audit) >= 1, "the action's audit record to be shipped")
        status = json.loads((await asyncio.to_thread(_get, d.url + "/status"))[1])
        assert status["bundle"]["revision"] == 42 and status["bundle"]["source"] == "distributor"
        assert status["tenants"]["payments"]["quota"]["gpuMemoryBytes"] == 8 * GIB
        (action,) = status["actions"]
        assert action["quota"] == "gpuMemoryBytes" and action["pod"] == "payments/api"
        assert status["trust"]["waiting"] is False and len(status["trust"]["keyIds"]) == 2
        hb = status["heartbeat"]
        assert hb["connected"] is True and hb["sent"] >= 2 and hb["lastSent"]
        last = dist.heartbeats[-1]
        summary = dict(last.summary)
        assert summary["node"] == "test-node" and summary["mode"] == "simulated"
        assert summary["violations"] == ["payments/gpuMemoryBytes"]
        assert summary["tenants"]["payments"]["gpuMemoryBytes"] == 12 * GIB
        assert last.revision == 42 and last.health == "ok"
        shipped = dist.audit[0]
        assert shipped.kind == "action" and shipped.tenant == "payments"
        assert shipped.rule_id == "gpuQuota/gpuMemoryBytes" and shipped.bundle_revision == 42
    finally:
        assert await asyncio.to_thread(d.stop) == 0
        await server.stop(None)


async def test_a_signing_key_published_after_start_lets_the_refused_bundle_in_without_a_restart(
    tmp_path: Path,
) -> None:
    """A first install: the agent starts on an empty trust volume (the optional ConfigMap
    is not there yet), refuses the real distributor's bundle, stays healthy and says it
    waits; the kubelet then swaps the key in and the same revision is verified and ACKed."""
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "payments.yaml").write_text(bundle_yaml(gpus=3))
    key = write_key(tmp_path / "signing.pem")
    replica = start_replica(
        tmp_path,
        "r0",
        policy_dir=policies,
        store=tmp_path / "d.db",
        keys=[tmp_path / "signing.pem"],
    )
    volume = tmp_path / "trusted"
    volume.mkdir()
    d = Daemon(
        tmp_path,
        "--backend",
        "sim",
        "--scenario",
        str(EXAMPLE / "node.yaml"),
        "--distributor",
        replica.target,
        "--trusted-key",
        str(volume),
        "--trusted-key-poll",
        "0.2",
        "--heartbeat-interval",
        "0.3",
        "--interval",
        "0.2",
    )

    async def status() -> dict[str, Any]:
        return dict(json.loads((await asyncio.to_thread(_get, d.url + "/status"))[1]))

    async def fleet_row() -> dict[str, Any]:
        _, body = await ahttp("GET", replica.url + "/v1/fleet?kind=node")
        rows = body["clients"]
        return dict(rows[0]) if rows else {}

    try:
        await asyncio.to_thread(d.wait_ready)
        for _ in range(300):
            doc = await status()
            if doc["heartbeat"].get("bundleNacks", 0) >= 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the bundle was never refused")
        assert doc["health"] == "ok" and doc["bundle"]["source"] == "none"
        assert doc["trust"]["waiting"] is True
        assert "waiting for the distributor's signing key" in doc["trust"]["message"]
        assert "no trusted keys" in doc["heartbeat"]["lastError"]
        assert (await asyncio.to_thread(_get, d.url + "/healthz"))[0] == 200
        for _ in range(100):
            row = await fleet_row()
            if row.get("nack_revision") == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the distributor never saw the NACK")
        assert row["revision"] == 0

        kubelet_publish(volume, {"keys.pem": public_key_pem(key)})
        for _ in range(300):
            doc = await status()
            if doc["bundle"]["revision"] == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the bundle was never taken after the key appeared")
        assert doc["bundle"]["source"] == "distributor"
        assert doc["tenants"]["payments"]["quota"]["gpus"] == 3
        assert doc["trust"]["waiting"] is False
        assert doc["trust"]["keyIds"] == [key_id(key)]
        assert doc["heartbeat"]["resubscribes"] == 1
        assert doc["heartbeat"]["state"] == "OK"
        for _ in range(100):
            row = await fleet_row()
            if row.get("revision") == 1:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the distributor never saw the ACK")
        assert row["nack_revision"] == 0, "the ACK cleared the NACK"
        assert d.proc.poll() is None, "no restart"
    finally:
        assert await asyncio.to_thread(d.stop) == 0
        replica.stop()
