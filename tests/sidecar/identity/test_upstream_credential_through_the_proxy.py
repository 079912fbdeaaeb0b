"""The upstream gets the sidecar's credential from a Secret file, never the client's token.

The real proxy app (in process) with the real resource server and a
:class:`FileCredential`, in front of the header-echo SDK server (a subprocess).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from palisade.audit import AuditWriter, Signer
from palisade.bundle.canonical import to_document
from palisade.bundle.load import load_file
from palisade.policy.engine import compile_bundle
from sidecar.app import build_app
from sidecar.audit import WriterSink
from sidecar.core import ProxyCore
from sidecar.credentials import FileCredential
from sidecar.identity import IdentityMap, IdentityStack
from sidecar.intake import snapshot_of
from sidecar.policy import PolicyHolder
from sidecar.settings import SidecarSettings
from sidecar.upstream import Upstream
from tests.harness.peers import free_port
from tests.sidecar.conformance.peers import process, wait_http
from tests.sidecar.identity.conftest import settings_for
from tests.sidecar.identity.issuer import Issuer

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent


@pytest.fixture
async def proxy(issuer: Issuer, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("upstream-secret-1\n")
    up_port, port = free_port(), free_port()
    bundle = tmp_path / "bundle.yaml"
    bundle.write_text((HERE / "echo-bundle.yaml.in").read_text().replace("@ISSUER@", issuer.url))
    engine = compile_bundle(load_file(bundle), revision=1)
    agents = to_document(load_file(bundle))["spec"].get("agents", [])
    resource = f"http://127.0.0.1:{port}/mcp"
    argv = [sys.executable, "-m", "tests.sidecar.identity.header_echo_server"]
    with process([*argv, "--port", str(up_port)], tmp_path / "upstream.log") as up:
        wait_http(f"http://127.0.0.1:{up_port}/", proc=up)
        async with IdentityStack(
            settings_for(issuer, resource=resource), IdentityMap.from_agents(agents)
        ) as stack:
            assert stack.authenticator is not None
            settings = SidecarSettings(
                upstream=f"http://127.0.0.1:{up_port}",
                server_name="header-echo",
                listen_host="127.0.0.1",
                listen_port=port,
            )
            writer = AuditWriter(tmp_path / "audit.jsonl", Signer.generate(), fsync="never")
            writer.open()
            credential = FileCredential(str(secret / "token"), check_interval_s=0.0)
            core = ProxyCore(
                settings=settings,
                policy=PolicyHolder(snapshot_of(engine, "header-echo")),
                authenticator=stack.authenticator,
                audit=WriterSink(writer),
                upstream=Upstream(settings.upstream, timeout_s=30, credentials=credential),
            )
            runner = web.AppRunner(build_app(core), handle_signals=False, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            try:
                yield resource, secret / "token"
            finally:
                await runner.cleanup()
                writer.close()


async def seen_by_upstream(url: str, token: str) -> dict[str, str]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        result = await c.call_tool("seen_headers", {})
    assert not result.is_error, result
    doc: dict[str, str] = json.loads(result.content[0].text)  # type: ignore[union-attr]
    return doc


async def test_the_upstream_sees_the_secret_credential_and_follows_its_rotation(
    issuer: Issuer, proxy: tuple[str, Path]
) -> None:
    url, secret = proxy
    token = issuer.token(aud=url)
    seen = await seen_by_upstream(url, token)
    assert seen["authorization"] == "Bearer upstream-secret-1"
    assert all(token not in v for v in seen.values())
    rotated = secret.with_name("token.new")
    rotated.write_text("upstream-secret-2")
    os.replace(rotated, secret)
    seen = await seen_by_upstream(url, token)
    assert seen["authorization"] == "Bearer upstream-secret-2"
