"""``palisade sidecar --vault-addr``: the upstream gets the Vault secret, not the client token.

Real peers only: OpenBao, the test token issuer, the sidecar process configured
with the ``--vault-*`` flags, and an MCP server (SDK) that reports the headers it
received; the client is the MCP SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.harness.peers import free_port
from tests.sidecar.conformance.peers import Sidecar, issuer_thread, process, sidecar, wait_http
from tests.sidecar.identity.issuer import Issuer
from tests.sidecar.vault.bao import BaoServer
from tests.sidecar.vault.conftest import FIELD, FIRST, MOUNT, PATH, Vault

pytestmark = pytest.mark.e2e

ECHO_BUNDLE = Path(__file__).parents[1] / "identity" / "echo-bundle.yaml.in"
MAX_STALE_S = 3.0
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "vault-e2e", "version": "1"},
    },
}


@dataclass
class Peers:
    vault: Vault
    issuer: Issuer
    sidecar: Sidecar


@pytest.fixture
def peers(vault: Vault, token_file: Path, tmp_path: Path) -> Iterator[Peers]:
    port = free_port()
    argv = [sys.executable, "-m", "tests.sidecar.identity.header_echo_server", "--port", str(port)]
    vault_args = [
        "--vault-addr", vault.addr,
        "--vault-kv-mount", MOUNT,
        "--vault-secret-path", PATH,
        "--vault-secret-field", FIELD,
        "--vault-token-file", str(token_file),
        "--vault-refresh", "0.3",
        "--vault-max-stale", str(MAX_STALE_S),
        # the echo server hands the credential it received back as tool output, which
        # the sidecar would otherwise redact (docs/quarantine.md)
        "--no-redact-outputs",
    ]  # fmt: skip
    with issuer_thread() as issuer, process(argv, tmp_path / "upstream.log") as up:
        wait_http(f"http://127.0.0.1:{port}/", proc=up)
        with sidecar(
            tmp_path,
            f"http://127.0.0.1:{port}/mcp",
            issuer,
            template=ECHO_BUNDLE,
            server_name="header-echo",
            extra_args=vault_args,
        ) as sc:
            yield Peers(vault, issuer, sc)


@contextlib.asynccontextmanager
async def sdk_client(url: str, token: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        yield c


async def seen_by_upstream(peers: Peers, token: str) -> dict[str, str]:
    async with sdk_client(peers.sidecar.url, token) as c:
        result = await c.call_tool("seen_headers", {})
    assert not result.is_error, result
    doc: dict[str, str] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return doc


async def test_the_upstream_sees_the_vault_secret_and_its_rotation_never_the_clients_token(
    peers: Peers,
) -> None:
    token = peers.issuer.token(aud=peers.sidecar.resource)
    seen = await seen_by_upstream(peers, token)
    assert seen["authorization"] == f"Bearer {FIRST}"
    assert all(token not in v for v in seen.values())

    peers.vault.write("rotated-in-vault")
    deadline = time.monotonic() + 15
    while seen["authorization"] != "Bearer rotated-in-vault" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        seen = await seen_by_upstream(peers, token)
    assert seen["authorization"] == "Bearer rotated-in-vault"


async def test_with_vault_gone_past_max_stale_calls_are_refused_not_forwarded(
    peers: Peers, bao: BaoServer
) -> None:
    token = peers.issuer.token(aud=peers.sidecar.resource)
    assert (await seen_by_upstream(peers, token))["authorization"] == f"Bearer {FIRST}"
    bao.stop()
    await asyncio.sleep(MAX_STALE_S + 1.0)
    headers = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(peers.sidecar.url, data=json.dumps(INITIALIZE), headers=headers) as r,
    ):
        status, body = r.status, await r.json()
    assert status == 502
    assert "upstream credential is unavailable" in body["error"]["message"]
    assert FIRST not in json.dumps(body)
    log = (peers.sidecar.audit_dir.parent / "sidecar.log").read_text()
    assert "cannot read the upstream credential from Vault" in log
    assert FIRST not in log
    assert token not in log
