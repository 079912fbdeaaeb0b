"""Where the server listens: Unix socket (stale ones replaced), loopback TCP only."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from palisade.audit import AuditWriter, Signer
from palisade.runtime.metrics import DecisionMetrics
from palisade.service import EngineHolder, PolicyServicer, ServerSettings, start_server
from palisade.service.policy_source import load_policy
from palisade.service.server import ServerError, stop_server
from palisade.v1 import policy_pb2, policy_pb2_grpc

from .conftest import BUNDLE


@pytest.fixture
async def servicer(tmp_path: Path) -> PolicyServicer:
    writer = AuditWriter(tmp_path / "a.jsonl", Signer.generate(), fsync="never")
    await writer.start()
    policy = load_policy(BUNDLE)
    return PolicyServicer(EngineHolder(policy.engine), writer, DecisionMetrics(CollectorRegistry()))


def _req() -> policy_pb2.CheckRequest:
    return policy_pb2.CheckRequest(
        agent="sre-agent-payments", server="kubernetes-mcp", server_version="1.0", tool="pods_log"
    )


async def test_loopback_tcp_serves_alongside_the_socket(servicer: PolicyServicer) -> None:
    sock_dir = tempfile.mkdtemp(prefix="pal-", dir="/tmp")
    sock = f"{sock_dir}/c.sock"
    server, health, port = await start_server(
        servicer, ServerSettings(socket_path=sock, tcp="127.0.0.1:0")
    )
    try:
        assert port > 0
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            resp = await policy_pb2_grpc.PolicyServiceStub(ch).Check(_req())
        assert resp.decision == policy_pb2.DECISION_ALLOW
    finally:
        await stop_server(server, health, 0.1)
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.parametrize("addr", ["0.0.0.0:7070", "10.1.2.3:7070", "127.0.0.1:http"])
async def test_a_non_loopback_tcp_address_is_refused(servicer: PolicyServicer, addr: str) -> None:
    with pytest.raises(ServerError, match="loopback"):
        await start_server(servicer, ServerSettings(tcp=addr))


async def test_a_stale_socket_is_replaced_but_a_regular_file_is_not(
    servicer: PolicyServicer, tmp_path: Path
) -> None:
    sock_dir = tempfile.mkdtemp(prefix="pal-", dir="/tmp")
    regular = Path(sock_dir) / "not-a-socket"
    regular.write_text("keep me")
    with pytest.raises(ServerError, match="not a socket"):
        await start_server(servicer, ServerSettings(socket_path=str(regular)))
    assert regular.read_text() == "keep me"
    sock = f"{sock_dir}/c.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sock)  # a socket file left behind by a crashed server
    stale.close()
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    second, health2, _ = await start_server(servicer, ServerSettings(socket_path=sock))
    try:
        async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
            resp = await policy_pb2_grpc.PolicyServiceStub(ch).Check(_req())
        assert resp.decision == policy_pb2.DECISION_ALLOW
    finally:
        await stop_server(second, health2, 0.1)
        shutil.rmtree(sock_dir, ignore_errors=True)


async def test_nothing_to_listen_on_is_an_error(servicer: PolicyServicer) -> None:
    with pytest.raises(ServerError, match="nothing to listen on"):
        await start_server(servicer, ServerSettings())
