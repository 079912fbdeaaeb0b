"""The SDK client -> sidecar -> @modelcontextprotocol/server-everything (streamableHttp and sse),
and the legacy HTTP+SSE transport (2024-11-05) against the Python SDK's own SSE server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from sidecar import jsonrpc
from sidecar.gate import UNTRUSTED_META_KEY

from .conftest import (
    Sidecar,
    UpstreamProc,
    auth,
    run_sidecar,
    start_everything,
    start_example_server,
    stop_process,
)

pytestmark = pytest.mark.e2e

EVERYTHING_BUNDLE = Path(__file__).with_name("everything-bundle.yaml")


@contextlib.asynccontextmanager
async def streamable(url: str, token: str = "sre-token") -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers=auth(token))
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        yield c


@contextlib.asynccontextmanager
async def legacy(base: str, token: str = "sre-token") -> AsyncIterator[Client]:
    async with Client(sse_client(base + "/sse", headers=auth(token)), mode="legacy") as c:
        yield c


@pytest.fixture(scope="module")
def everything_http() -> Iterator[UpstreamProc]:
    up = start_everything("streamableHttp")
    yield up
    stop_process(up.proc)


@pytest.fixture(scope="module")
def everything_sse() -> Iterator[UpstreamProc]:
    up = start_everything("sse")
    yield up
    stop_process(up.proc)


@pytest.fixture(scope="module")
def python_sse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up-sse"), "--transport", "sse")
    yield up
    stop_process(up.proc)


@contextlib.asynccontextmanager
async def everything_sidecar(up: UpstreamProc, tmp: Path) -> AsyncIterator[Sidecar]:
    async with run_sidecar(up.url, tmp, bundle=EVERYTHING_BUNDLE, server_name="everything") as sc:
        yield sc


async def check_everything(c: Client, sc: Sidecar) -> None:
    names = {t.name for t in (await c.list_tools()).tools}
    assert {"echo", "get-sum", "trigger-long-running-operation", "get-tiny-image"} <= names
    assert "get-env" not in names  # admin by the registry
    assert "gzip-file-as-resource" not in names  # not registered
    echoed = await c.call_tool("echo", {"message": "hello through palisade"})
    assert "hello through palisade" in echoed.content[0].text  # type: ignore[union-attr]
    total = await c.call_tool("get-sum", {"a": 2, "b": 3})
    assert "5" in total.content[0].text  # type: ignore[union-attr]
    with pytest.raises(MCPError) as denied:
        await c.call_tool("get-env", {})
    assert denied.value.error.code == jsonrpc.POLICY_DENIED
    assert denied.value.error.data["rule"] == "deny-admin"
    with pytest.raises(MCPError) as approval:
        await c.call_tool("get-tiny-image", {})
    assert approval.value.error.code == jsonrpc.APPROVAL_REQUIRED
    assert approval.value.error.data["approval_id"]
    decisions = [(r["tool"], r["decision"]) for r in sc.audit() if r["kind"] == "decision"]
    assert ("get-env", "deny") in decisions and ("echo", "allow") in decisions


async def test_reference_server_over_streamable_http(
    everything_http: UpstreamProc, tmp_path: Path
) -> None:
    async with everything_sidecar(everything_http, tmp_path) as sc, streamable(sc.url) as c:
        await check_everything(c, sc)


async def test_reference_server_progress_and_throttle(
    everything_http: UpstreamProc, tmp_path: Path
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with everything_sidecar(everything_http, tmp_path) as sc:
        async with streamable(sc.url) as c:
            await c.list_tools()
            done = await c.call_tool(
                "trigger-long-running-operation",
                {"duration": 0.3, "steps": 3},
                progress_callback=on_progress,
            )
            assert not done.is_error
        async with streamable(sc.url, token="busy-token") as c:
            await c.call_tool("echo", {"message": "one"})
            with pytest.raises(MCPError) as throttled:
                await c.call_tool("echo", {"message": "two"})
    assert seen == [1, 2, 3]
    assert throttled.value.error.code == jsonrpc.THROTTLED
    assert throttled.value.error.data["retry_after"] > 0


async def test_reference_server_over_legacy_sse(
    everything_sse: UpstreamProc, tmp_path: Path
) -> None:
    async with everything_sidecar(everything_sse, tmp_path) as sc, legacy(sc.base) as c:
        assert c.protocol_version == "2025-11-25"
        await check_everything(c, sc)


async def test_legacy_sse_against_the_python_sdk_server(
    python_sse: UpstreamProc, tmp_path: Path
) -> None:
    async with run_sidecar(python_sse.url, tmp_path) as sc, legacy(sc.base) as c:
        listed = await c.list_tools()
        names = {t.name for t in listed.tools}
        assert "pods_log" in names and "resources_delete" not in names
        log = await c.call_tool("pods_log", {"namespace": "payments", "name": "payments-api-1"})
        assert log.meta is not None and log.meta[UNTRUSTED_META_KEY] is True
        with pytest.raises(MCPError) as denied:
            await c.call_tool("resources_delete", {"kind": "Deployment", "name": "payments-api"})
        assert denied.value.error.data["rule"] == "deny-destructive"
        ok = await c.call_tool("pods_list", {"namespace": "payments"})
        assert not ok.is_error


async def test_legacy_sse_refuses_a_message_for_an_unknown_session(sidecar: Sidecar) -> None:
    import aiohttp

    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(sidecar.base + "/messages/?session_id=nope", json=body, headers=auth()) as r,
    ):
        assert r.status == 404


async def test_the_2024_11_05_revision_over_legacy_sse_raw(
    python_sse: UpstreamProc, tmp_path: Path
) -> None:
    """Initialize with 2024-11-05 by hand; answers, denials included, arrive on the SSE stream."""
    import json

    import aiohttp

    async with (
        run_sidecar(python_sse.url, tmp_path) as sc,
        aiohttp.ClientSession() as http,
        http.get(sc.base + "/sse", headers={**auth(), "Accept": "text/event-stream"}) as stream,
    ):
        assert stream.status == 200
        buf = b""

        async def next_event() -> tuple[str, str]:
            nonlocal buf
            while b"\n\n" not in buf.replace(b"\r\n", b"\n"):
                buf += await stream.content.readany()
            norm = buf.replace(b"\r\n", b"\n")
            block, rest = norm.split(b"\n\n", 1)
            buf = rest
            fields = dict(
                line.split(": ", 1) for line in block.decode().split("\n") if ": " in line
            )
            return fields.get("event", "message"), fields.get("data", "")

        kind, endpoint = await next_event()
        assert kind == "endpoint" and endpoint.startswith("/messages/")

        async def send(doc: dict[str, Any]) -> dict[str, Any] | None:
            async with http.post(sc.base + endpoint, json=doc, headers=auth()) as r:
                assert r.status == 202, await r.text()
            if "id" not in doc:
                return None
            while True:
                _, data = await next_event()
                msg = json.loads(data)
                if msg.get("id") == doc["id"]:
                    return msg

        init = await send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "1"},
                },
            }
        )
        assert init is not None and init["result"]["protocolVersion"] == "2024-11-05"
        await send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        listed = await send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        assert listed is not None
        names = {t["name"] for t in listed["result"]["tools"]}
        assert "resources_delete" not in names and "pods_list" in names
        denied = await send(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {
                    "name": "resources_delete",
                    "arguments": {"kind": "Pod", "name": "x"},
                },
            }
        )
        assert denied is not None and denied["error"]["code"] == jsonrpc.POLICY_DENIED
