"""A real PolicyService on a real Unix socket, deciding with the real engine and a test bundle."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from palisade.audit import AuditWriter, Signer
from palisade.policy.types import Call, Verdict
from palisade.runtime.metrics import DecisionMetrics
from palisade.service import EngineHolder, PolicyServicer, ServerSettings, start_server
from palisade.service.policy_source import load_policy
from palisade.service.server import stop_server
from palisade.v1 import policy_pb2_grpc

BUNDLE = Path(__file__).parent / "data" / "payments.yaml"


class BrokenEngine:
    """An engine with a bug: the servicer must still answer, deny and audit."""

    def decide(self, call: Call, *, dry_run: bool = False, explain: bool = False) -> Verdict:
        raise RuntimeError("engine bug with a secret=hunter2 in its message")


@dataclass
class Served:
    stub: policy_pb2_grpc.PolicyServiceStub
    channel: grpc.aio.Channel
    socket: str
    audit_path: Path
    signer: Signer
    metrics: DecisionMetrics
    engines: EngineHolder
    writer: AuditWriter


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer
    sock_dir = tempfile.mkdtemp(prefix="pal-", dir="/tmp")
    socket = f"{sock_dir}/check.sock"
    signer = Signer.generate()
    writer = AuditWriter(tmp_path / "audit.jsonl", signer, fsync="never")
    await writer.start()
    metrics = DecisionMetrics(CollectorRegistry())
    policy = load_policy(BUNDLE)  # the real engine, behind the fail-closed guard
    engines = EngineHolder(policy.engine, secret_names=policy.secret_names)
    servicer = PolicyServicer(engines, writer, metrics)
    server, health, _ = await start_server(servicer, ServerSettings(socket_path=socket))
    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    try:
        yield Served(
            policy_pb2_grpc.PolicyServiceStub(channel),
            channel,
            socket,
            tmp_path / "audit.jsonl",
            signer,
            metrics,
            engines,
            writer,
        )
    finally:
        await channel.close()
        await stop_server(server, health, 0.5)
        await writer.aclose()
        shutil.rmtree(sock_dir, ignore_errors=True)
