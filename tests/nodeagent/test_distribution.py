"""The agent and a real gRPC DistributionService: quotas pushed in, heartbeats and audit out."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import yaml

from palisade.bundle import from_document, generate_key, public_key_pem, sign_bundle
from palisade.v1 import distribution_pb2, distribution_pb2_grpc
from tests.nodeagent.test_daemon import Daemon, _get

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
    (tmp_path / "trusted.pem").write_bytes(public_key_pem(key))
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
