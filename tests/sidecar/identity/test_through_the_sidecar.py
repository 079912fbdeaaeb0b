"""Identity end to end: MCP SDK client -> ``palisade sidecar`` -> an SDK server.

Real peers only: the test issuer (discovery + JWKS), the sidecar process verifying
its tokens, and an upstream that reports the headers it received.
"""

from __future__ import annotations

import contextlib
import json
import sys
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
from tests.sidecar.identity.issuer import Issuer, new_key

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "identity-e2e", "version": "1"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Peers:
    issuer: Issuer
    sidecar: Sidecar
    credential_file: Path


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    work = tmp_path_factory.mktemp("identity-e2e")
    credential = work / "upstream-token"
    credential.write_text("upstream-secret-1\n")
    port = free_port()
    argv = [sys.executable, "-m", "tests.sidecar.identity.header_echo_server", "--port", str(port)]
    with (
        issuer_thread() as issuer,
        process(argv, work / "upstream.log") as up,
    ):
        wait_http(f"http://127.0.0.1:{port}/", proc=up)
        with sidecar(
            work,
            f"http://127.0.0.1:{port}/mcp",
            issuer,
            template=HERE / "echo-bundle.yaml.in",
            server_name="header-echo",
        ) as sc:
            yield Peers(issuer, sc, credential)


@contextlib.asynccontextmanager
async def sdk_client(url: str, token: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        yield c


async def post_initialize(url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=json.dumps(INITIALIZE), headers={**ACCEPT, **headers}) as r,
    ):
        return r.status, r.headers.get("WWW-Authenticate", ""), await r.text()


async def test_a_valid_token_reaches_the_upstream_without_the_clients_token(peers: Peers) -> None:
    token = peers.issuer.token(aud=peers.sidecar.resource)
    async with sdk_client(peers.sidecar.url, token) as c:
        result = await c.call_tool("seen_headers", {})
    assert not result.is_error
    seen = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert "authorization" not in seen
    assert all(token not in v for v in seen.values())
    assert seen.get("host", "").startswith("127.0.0.1")


async def test_a_missing_token_is_401_pointing_at_the_resource_metadata(peers: Peers) -> None:
    status, challenge, _ = await post_initialize(peers.sidecar.url, {})
    assert status == 401
    port = peers.sidecar.url.split(":")[2].split("/")[0]
    meta_url = f"http://127.0.0.1:{port}/.well-known/oauth-protected-resource/mcp"
    assert challenge == f'Bearer resource_metadata="{meta_url}"'
    async with aiohttp.ClientSession() as http, http.get(meta_url) as r:
        doc = await r.json()
    assert doc["resource"] == peers.sidecar.resource
    assert doc["authorization_servers"] == [peers.issuer.url]


async def test_a_forged_token_is_401_invalid_token(peers: Peers) -> None:
    forger = new_key("EdDSA")
    forger.kid = peers.issuer.keys[-1].kid
    forged = peers.issuer.token(aud=peers.sidecar.resource, key=forger)
    status, challenge, body = await post_initialize(
        peers.sidecar.url, {"Authorization": f"Bearer {forged}"}
    )
    assert status == 401
    assert 'error="invalid_token"' in challenge
    assert "signature does not verify" in challenge
    assert forged not in body and forged.split(".")[2] not in challenge


async def test_a_token_for_another_server_is_refused(peers: Peers) -> None:
    other = peers.issuer.token(aud="http://127.0.0.1:1/mcp")
    status, challenge, _ = await post_initialize(
        peers.sidecar.url, {"Authorization": f"Bearer {other}"}
    )
    assert status == 401
    assert 'error_description="the token was not issued for this server (audience)"' in challenge


async def test_a_valid_token_of_no_agent_is_403_insufficient_scope(peers: Peers) -> None:
    stranger = peers.issuer.token(aud=peers.sidecar.resource, sub="stranger")
    status, challenge, _ = await post_initialize(
        peers.sidecar.url, {"Authorization": f"Bearer {stranger}"}
    )
    assert status == 403
    assert 'error="insufficient_scope"' in challenge


async def test_the_sdk_client_without_a_token_cannot_connect(peers: Peers) -> None:
    http = create_mcp_http_client()
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the 401 its own way
        async with http, Client(streamable_http_client(peers.sidecar.url, http_client=http)):
            pass


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/mcp"), ("DELETE", "/mcp"), ("GET", "/sse"), ("POST", "/messages/?session_id=x")],
)
async def test_every_mcp_endpoint_asks_for_a_token(peers: Peers, method: str, path: str) -> None:
    base = peers.sidecar.url.removesuffix("/mcp")
    headers = {"Accept": "application/json, text/event-stream", "Mcp-Session-Id": "s"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base + path, headers=headers, data=b"{}") as r,
    ):
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith('Bearer resource_metadata="')
