"""Real peers for the proxy tests: the example MCP server in a subprocess, the sidecar in process.

Nothing between the client and the upstream is stubbed: the upstream is the MCP
SDK's own server (uvicorn, a subprocess), the sidecar is the real aiohttp app with
the real engine compiled from ``bundle.yaml``, the real audit writer, and the
identity engineer's development authenticator (static tokens).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from palisade.audit import AuditWriter, Signer
from palisade.bundle.load import load_file
from palisade.policy.engine import compile_bundle
from sidecar.app import build_app
from sidecar.audit import WriterSink
from sidecar.core import ProxyCore
from sidecar.identity import Authenticator, DevAgent, DevAuthenticator
from sidecar.intake import snapshot_of
from sidecar.policy import PolicyHolder
from sidecar.settings import Limits, SidecarSettings
from sidecar.upstream import Upstream
from tests.harness.peers import free_port, wait_port

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = Path(__file__).with_name("bundle.yaml")
EXAMPLE_SERVER = ROOT / "examples" / "mcp_servers" / "k8s_server.py"
SERVER = "kubernetes-mcp"

TOKENS = {
    "sre-token": DevAgent("sre-agent", "payments", "alice@example.com"),
    "busy-token": DevAgent("busy-agent", "payments"),
    "search-token": DevAgent("search-agent", "search"),
}


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class UpstreamProc:
    url: str
    port: int
    state_dir: Path
    proc: subprocess.Popen[bytes]


def everything_entry() -> Path:
    """Where scripts/setup.d/50-mcp-peers.sh put @modelcontextprotocol/server-everything."""
    cache = Path(os.environ.get("PALISADE_CACHE", Path.home() / ".cache" / "palisade"))
    pointer = cache / "npm" / "current-everything"
    if not pointer.is_file() or not Path(pointer.read_text().strip()).is_file():
        pytest.fail("@modelcontextprotocol/server-everything is not installed: run make setup")
    return Path(pointer.read_text().strip())


def start_everything(mode: str) -> UpstreamProc:
    """server-everything in ``streamableHttp`` or ``sse`` mode on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(everything_entry()), mode],
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return UpstreamProc(f"http://127.0.0.1:{port}", port, Path(), proc)


def start_example_server(tmp: Path, *extra: str) -> UpstreamProc:
    port = free_port()
    state = tmp / f"upstream-state-{port}"
    state.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLE_SERVER),
            "--port",
            str(port),
            "--state-dir",
            str(state),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return UpstreamProc(f"http://127.0.0.1:{port}", port, state, proc)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    """The example server, Streamable HTTP answering with SSE streams."""
    up = start_example_server(tmp_path_factory.mktemp("up"))
    yield up
    stop_process(up.proc)


@dataclass
class Sidecar:
    url: str
    base: str
    core: ProxyCore
    audit_path: Path

    def audit(self) -> list[dict[str, Any]]:
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        return [json.loads(line) for line in lines]


@contextlib.asynccontextmanager
async def run_sidecar(
    upstream_url: str,
    tmp: Path,
    limits: Limits | None = None,
    bundle: Path = BUNDLE,
    server_name: str = SERVER,
    authenticator: Callable[[str], Authenticator] | None = None,
) -> AsyncIterator[Sidecar]:
    """The real sidecar app on a free port; ``authenticator`` gets the resource URI
    (default: the dev tokens of :data:`TOKENS`)."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    settings = SidecarSettings(
        upstream=upstream_url,
        server_name=server_name,
        listen_host="127.0.0.1",
        listen_port=port,
        limits=limits or Limits(),
    )
    engine = compile_bundle(load_file(bundle), revision=1)
    writer = AuditWriter(tmp / f"audit-{port}.jsonl", Signer.generate(), fsync="never")
    writer.open()
    core = ProxyCore(
        settings=settings,
        policy=PolicyHolder(snapshot_of(engine, server_name)),
        authenticator=(
            authenticator(resource)
            if authenticator is not None
            else DevAuthenticator(TOKENS, resource=resource, enabled=True)
        ),
        audit=WriterSink(writer),
        upstream=Upstream(upstream_url, timeout_s=settings.limits.upstream_timeout_s),
    )
    runner = web.AppRunner(
        build_app(core),
        handle_signals=False,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=2.0,
        max_line_size=settings.limits.max_header_bytes,
        max_field_size=settings.limits.max_header_bytes,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield Sidecar(f"http://127.0.0.1:{port}/mcp", f"http://127.0.0.1:{port}", core, writer.path)
    finally:
        await runner.cleanup()
        writer.close()


@pytest.fixture
async def sidecar(upstream: UpstreamProc, tmp_path: Path) -> AsyncIterator[Sidecar]:
    async with run_sidecar(upstream.url, tmp_path) as sc:
        yield sc


def auth(token: str = "sre-token") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


MCP_ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def sse_messages(body: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an SSE body."""
    out = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        data = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data:")]
        if data:
            with contextlib.suppress(ValueError):
                out.append(json.loads("\n".join(data)))
    return out


async def answer_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The JSON-RPC answer of a POST, whether it came as JSON or as an SSE stream."""
    text = await resp.text()
    if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
        msgs = [m for m in sse_messages(text) if "id" in m and "method" not in m]
        assert msgs, text
        return msgs[-1]
    doc: dict[str, Any] = json.loads(text)
    return doc


async def raw_session(
    http: aiohttp.ClientSession, url: str, token: str = "sre-token", version: str = "2025-06-18"
) -> str:
    """Initialize a session by hand; returns its Mcp-Session-Id."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    async with http.post(url, json=init, headers={**MCP_ACCEPT, **auth(token)}) as r:
        assert r.status == 200, await r.text()
        doc = await answer_of(r)
        assert doc["result"]["protocolVersion"] == version
        sid = r.headers["Mcp-Session-Id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = {**MCP_ACCEPT, **auth(token), "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
    async with http.post(url, json=note, headers=headers) as r:
        assert r.status == 202, await r.text()
    return sid


def session_headers(
    sid: str, token: str = "sre-token", version: str = "2025-06-18"
) -> dict[str, str]:
    return {**MCP_ACCEPT, **auth(token), "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}


async def settle() -> None:
    await asyncio.sleep(0)
