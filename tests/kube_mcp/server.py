"""The real kubernetes-mcp-server as a child process, started as its image starts it.

The binary is the one scripts/setup.d/52-kubernetes-mcp-server.sh caches (the
same file the image palisade-kubernetes-mcp carries); it runs with the image's
config (``require_oauth`` passthrough, images/files/kubernetes-mcp-server.toml),
the image's toolsets, on a free loopback port, with a kubeconfig that names a
cluster and *no credential*: whatever the server does for a request, it does
with the bearer token that request carries, or not at all.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from images import definition
from tests.harness.peers import wait_port
from tests.harness.process import ManagedProcess, free_port

REPO = Path(__file__).resolve().parents[2]
SETUP_STEP = REPO / "scripts/setup.d/52-kubernetes-mcp-server.sh"


def binary() -> Path:
    cache = Path(os.environ.get("PALISADE_CACHE", Path.home() / ".cache" / "palisade"))
    path = cache / "npm" / f"kubernetes-mcp-server-{definition.KUBE_MCP_VERSION}"
    path = path / "kubernetes-mcp-server"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"kubernetes-mcp-server {definition.KUBE_MCP_VERSION} is not at {path}: "
            "run make setup (scripts/setup.d/52-kubernetes-mcp-server.sh)"
        )
    return path


def kubeconfig_without_credentials(path: Path, server: str, ca_pem: bytes | None = None) -> Path:
    """A kubeconfig naming ``server`` (and its CA) and a user with no credential."""
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "contexts": [{"name": "ctx", "context": {"cluster": "cluster", "user": "nobody"}}],
        "current-context": "ctx",
        "users": [{"name": "nobody", "user": {}}],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class KubeMcpServer:
    """``kubernetes-mcp-server`` with the image's config, cmd and toolsets."""

    def __init__(self, workdir: Path, kubeconfig: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = list(definition.KUBE_MCP.cmd)
        cmd[cmd.index("--port") + 1] = str(self.port)
        entry = list(definition.KUBE_MCP.entrypoint)
        entry[0] = str(binary())
        entry[entry.index("--config") + 1] = str(REPO / definition.KUBE_MCP_CONFIG_SOURCE)
        self.proc = ManagedProcess(
            "kubernetes-mcp-server",
            [*entry, *cmd, "--kubeconfig", str(kubeconfig), "--log-level", "2"],
            workdir / "kubernetes-mcp-server.log",
            env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)},
        )

    def __enter__(self) -> KubeMcpServer:
        self.proc.start()
        wait_port(self.port, timeout=30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.proc.stop()


def post(
    url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """POST one JSON-RPC message to ``url``/mcp: status, headers, body (SSE or JSON)."""
    request = urllib.request.Request(
        f"{url}/mcp",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def messages(text: str) -> list[dict[str, Any]]:
    """The JSON-RPC messages of an answer, whether SSE (``data:`` lines) or JSON."""
    text = text.strip()
    if text.startswith("{"):
        return [json.loads(text)]
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "palisade-tests", "version": "0"},
    },
}


def session(url: str, headers: dict[str, str]) -> dict[str, str]:
    """initialize + notifications/initialized; the headers to send in that session."""
    status, got, text = post(url, INITIALIZE, headers)
    assert status == 200, (status, text)
    sid = got.get("Mcp-Session-Id") or got.get("mcp-session-id") or ""
    with_session = {**headers, "Mcp-Session-Id": sid}
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    status, _, _ = post(url, note, with_session)
    assert status in (200, 202), status
    return with_session


def tools_list(url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    status, _, text = post(url, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers)
    assert status == 200, (status, text)
    (answer,) = messages(text)
    tools: list[dict[str, Any]] = answer["result"]["tools"]
    return tools
