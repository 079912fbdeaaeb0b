"""What the upstream says about itself is learned once, an empty version included.

An upstream whose ``serverInfo.version`` is empty (the MCP SDK server's default)
used to be asked for its version again on every ``tools/call``: three extra
upstream requests per call. The upstream here counts what reaches it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.sidecar import hostile_upstream as hu
from tests.sidecar.proxy.conftest import (
    BUNDLE,
    answer_of,
    raw_session,
    run_sidecar,
    session_headers,
)

pytestmark = pytest.mark.e2e


def _any_version_bundle(tmp: Path) -> Path:
    doc = yaml.safe_load(BUNDLE.read_text())
    for server in doc["spec"]["servers"]:
        server.pop("versions", None)
    path = tmp / "any-version.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def _empty_version(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
    result = {
        "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "sdk-default", "version": ""},
    }
    resp = web.json_response(hu.answer(msg["id"], result))
    resp.headers["Mcp-Session-Id"] = "s-empty"
    return resp


def _call(rid: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "pods_list"}}


@pytest.mark.parametrize("initialize_first", [True, False], ids=["session", "stateless"])
async def test_each_tools_call_is_one_upstream_request_with_an_empty_version(
    tmp_path: Path, initialize_first: bool
) -> None:
    async with hu.hostile_upstream() as h:
        h.handlers["initialize"] = _empty_version
        h.handlers["server/discover"] = _empty_version
        bundle = _any_version_bundle(tmp_path)
        async with (
            run_sidecar(h.url, tmp_path, bundle=bundle) as sc,
            aiohttp.ClientSession() as http,
        ):
            if initialize_first:
                sid = await raw_session(http, sc.url)
                headers = session_headers(sid)
            else:
                headers = session_headers("")
                headers.pop("Mcp-Session-Id")
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
            async with http.post(sc.url, json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
            before = Counter(str(m.get("method")) for m in h.received)
            for rid in range(10, 15):
                async with http.post(sc.url, json=_call(rid), headers=headers) as r:
                    doc = await answer_of(r)
                    assert "result" in doc, doc
            after = Counter(str(m.get("method")) for m in h.received)
    added = after - before
    assert added == Counter({"tools/call": 5}), added
