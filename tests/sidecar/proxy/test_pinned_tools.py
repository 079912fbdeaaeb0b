"""Registry pins: a tool whose advertised definition changed is hidden and refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from palisade.policy.digests import tool_digest
from sidecar import jsonrpc

from .conftest import BUNDLE, UpstreamProc, answer_of, raw_session, run_sidecar, session_headers

pytestmark = pytest.mark.e2e


async def upstream_tools(url: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, url)
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        async with http.post(url, json=body, headers=session_headers(sid)) as r:
            doc = await answer_of(r)
    return {t["name"]: t for t in doc["result"]["tools"]}


async def test_a_changed_definition_is_hidden_and_refused_and_a_matching_one_passes(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    tools = await upstream_tools(upstream.url + "/mcp")
    good = tools["pods_list"]
    pin = tool_digest(good)  # the whole definition: annotations too
    text = BUNDLE.read_text()
    text = text.replace(
        "{name: pods_list, risk: read}", f'{{name: pods_list, risk: read, pinned: "{pin}"}}'
    )
    stale = "sha256:" + "0" * 64  # what the server advertised when the bundle was reviewed
    text = text.replace(
        "{name: blob, risk: read}", f'{{name: blob, risk: read, pinned: "{stale}"}}'
    )
    bundle = tmp_path / "pinned.yaml"
    bundle.write_text(text)
    async with (
        run_sidecar(upstream.url, tmp_path, bundle=bundle) as sc,
        aiohttp.ClientSession() as http,
    ):
        sid = await raw_session(http, sc.url)

        async def call(rid: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
            body = {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "tools/call",
                "params": {"name": name, "arguments": args},
            }
            async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                return await answer_of(r)

        before = await call(3, "pods_list", {})
        assert before["error"]["data"]["rule"] == "registry"
        assert "list the tools first" in before["error"]["data"]["reason"]

        body = {"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}}
        async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
            listed = {t["name"] for t in (await answer_of(r))["result"]["tools"]}
        assert "pods_list" in listed
        assert "blob" not in listed

        assert "result" in await call(5, "pods_list", {"namespace": "payments"})
        changed = await call(6, "blob", {"size": 3})
        assert changed["error"]["code"] == jsonrpc.POLICY_DENIED
        assert "changed" in changed["error"]["data"]["reason"]
