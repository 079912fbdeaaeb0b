"""Bad input is refused with a clear JSON-RPC error, before any decision, and audited."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from sidecar import jsonrpc
from sidecar.settings import Limits

from .conftest import (
    MCP_ACCEPT,
    Sidecar,
    UpstreamProc,
    answer_of,
    auth,
    raw_session,
    run_sidecar,
    session_headers,
)

pytestmark = pytest.mark.e2e

CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "pods_list", "arguments": {"namespace": "payments"}},
}


async def post(
    http: aiohttp.ClientSession, sc: Sidecar, data: bytes | str, headers: dict[str, str]
) -> tuple[int, dict[str, object]]:
    async with http.post(sc.url, data=data, headers=headers) as r:
        return r.status, await answer_of(r)


async def test_malformed_json_is_a_parse_error(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        status, doc = await post(
            http, sidecar, b'{"jsonrpc": "2.0", "id": 1,', {**MCP_ACCEPT, **auth()}
        )
    assert status == 400
    assert doc["error"]["code"] == jsonrpc.PARSE_ERROR  # type: ignore[index]
    rec = sidecar.audit()[-1]
    assert rec["kind"] == "bad_input" and rec["agent"] == "sre-agent"


async def test_a_batch_is_refused_so_nothing_is_smuggled_past_the_checks(sidecar: Sidecar) -> None:
    batch = jsonrpc.dumps([CALL, {**CALL, "id": 8, "params": {"name": "resources_delete"}}])
    async with aiohttp.ClientSession() as http:
        status, doc = await post(http, sidecar, batch, {**MCP_ACCEPT, **auth()})
    assert status == 400
    assert doc["error"]["code"] == jsonrpc.INVALID_REQUEST  # type: ignore[index]
    assert "batches" in doc["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_a_wrong_content_type_is_refused(sidecar: Sidecar, ctype: str) -> None:
    headers = {**MCP_ACCEPT, **auth(), "Content-Type": ctype}
    async with aiohttp.ClientSession() as http:
        status, doc = await post(http, sidecar, jsonrpc.dumps(CALL), headers)
    assert status == 415
    assert "Content-Type" in doc["error"]["message"]  # type: ignore[index]


async def test_not_an_object_and_not_jsonrpc_2_are_invalid_requests(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        s1, d1 = await post(http, sidecar, b'"hello"', {**MCP_ACCEPT, **auth()})
        s2, d2 = await post(
            http, sidecar, jsonrpc.dumps({**CALL, "jsonrpc": "1.0"}), {**MCP_ACCEPT, **auth()}
        )
    assert (s1, s2) == (400, 400)
    assert d1["error"]["code"] == d2["error"]["code"] == jsonrpc.INVALID_REQUEST  # type: ignore[index]
    assert d2["id"] == 7


async def test_tool_arguments_that_are_not_an_object_are_invalid_params(sidecar: Sidecar) -> None:
    bad = {**CALL, "params": {"name": "pods_list", "arguments": ["payments"]}}
    async with aiohttp.ClientSession() as http:
        status, doc = await post(http, sidecar, jsonrpc.dumps(bad), {**MCP_ACCEPT, **auth()})
    assert status == 400
    assert doc["error"]["code"] == jsonrpc.INVALID_PARAMS  # type: ignore[index]


async def test_missing_token_is_401_with_a_challenge_and_is_audited(sidecar: Sidecar) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(sidecar.url, json=CALL, headers=MCP_ACCEPT) as r,
    ):
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    rec = sidecar.audit()[-1]
    assert rec["kind"] == "auth" and rec["decision"] == "deny"


async def test_unknown_token_is_401(sidecar: Sidecar) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(sidecar.url, json=CALL, headers={**MCP_ACCEPT, **auth("forged")}) as r,
    ):
        assert r.status == 401


async def test_another_agent_cannot_ride_on_a_session(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        status, doc = await post(
            http, sidecar, jsonrpc.dumps(CALL), session_headers(sid, token="search-token")
        )
    assert status == 403
    assert "another agent" in doc["error"]["message"]  # type: ignore[index]


async def test_a_session_is_bound_to_its_agent_from_the_initialize_answer_on(
    sidecar: Sidecar,
) -> None:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(sidecar.url, json=init, headers={**MCP_ACCEPT, **auth()}) as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            await r.read()
            sid = r.headers["Mcp-Session-Id"]
        # the other agent is first to use the id, before the owner sent anything else
        status, _ = await post(
            http, sidecar, jsonrpc.dumps(CALL), session_headers(sid, "search-token")
        )
    assert status == 403


class TestLimits:
    async def test_an_oversized_body_is_413(self, upstream: UpstreamProc, tmp_path: Path) -> None:
        async with run_sidecar(upstream.url, tmp_path, Limits(max_body_bytes=1024)) as sc:
            big = {**CALL, "params": {"name": "pods_list", "arguments": {"pad": "x" * 2048}}}
            async with aiohttp.ClientSession() as http:
                status, doc = await post(http, sc, jsonrpc.dumps(big), {**MCP_ACCEPT, **auth()})
            assert status == 413
            assert doc["error"]["code"] == jsonrpc.LIMIT_EXCEEDED  # type: ignore[index]
            assert "1024" in doc["error"]["message"]  # type: ignore[index]
            assert sc.audit()[-1]["kind"] == "bad_input"

    async def test_json_nested_too_deep_is_refused(
        self, upstream: UpstreamProc, tmp_path: Path
    ) -> None:
        async with run_sidecar(upstream.url, tmp_path, Limits(max_json_depth=8)) as sc:
            deep: object = "x"
            for _ in range(20):
                deep = {"a": deep}
            bad = {**CALL, "params": {"name": "pods_list", "arguments": deep}}
            async with aiohttp.ClientSession() as http:
                status, doc = await post(http, sc, jsonrpc.dumps(bad), {**MCP_ACCEPT, **auth()})
            assert status == 400
            assert "deeper than 8" in doc["error"]["message"]  # type: ignore[index]

    async def test_pathologically_deep_json_does_not_crash_the_proxy(
        self, sidecar: Sidecar
    ) -> None:
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + b"[" * 200_000
        async with aiohttp.ClientSession() as http:
            status, _ = await post(http, sidecar, body, {**MCP_ACCEPT, **auth()})
            assert status == 400
            sid = await raw_session(http, sidecar.url)  # still serving
            status, doc = await post(http, sidecar, jsonrpc.dumps(CALL), session_headers(sid))
            assert status == 200, doc

    async def test_an_oversized_header_is_refused(
        self, upstream: UpstreamProc, tmp_path: Path
    ) -> None:
        async with (
            run_sidecar(upstream.url, tmp_path, Limits(max_header_bytes=2048)) as sc,
            aiohttp.ClientSession() as http,
            http.post(
                sc.url, json=CALL, headers={**MCP_ACCEPT, **auth(), "X-Big": "y" * 4096}
            ) as r,
        ):
            assert r.status in (400, 431)


class TestHeaderBodyMismatch:
    """2026-07-28 routing headers must agree with the body: -32020, HTTP 400, no decision."""

    MODERN = "2026-07-28"

    def modern(self, method: str, name: str | None = None, **extra: str) -> dict[str, str]:
        h = {**MCP_ACCEPT, **auth(), "MCP-Protocol-Version": self.MODERN, "Mcp-Method": method}
        if name is not None:
            h["Mcp-Name"] = name
        return {**h, **extra}

    def body(self, name: str, arguments: dict[str, object]) -> bytes:
        return jsonrpc.dumps(
            {
                "jsonrpc": "2.0",
                "id": 11,
                "method": "tools/call",
                "params": {
                    "name": name,
                    "arguments": arguments,
                    "_meta": {
                        "io.modelcontextprotocol/protocolVersion": self.MODERN,
                        "io.modelcontextprotocol/clientCapabilities": {},
                    },
                },
            }
        )

    async def test_mcp_name_naming_another_tool_is_refused_before_any_decision(
        self, sidecar: Sidecar
    ) -> None:
        before = len(sidecar.audit())
        async with aiohttp.ClientSession() as http:
            status, doc = await post(
                http,
                sidecar,
                self.body("resources_delete", {"kind": "Pod", "name": "x"}),
                self.modern("tools/call", "pods_list"),
            )
        assert status == 400
        assert doc["error"]["code"] == jsonrpc.HEADER_MISMATCH == -32020  # type: ignore[index]
        new = sidecar.audit()[before:]
        assert [r["kind"] for r in new] == ["bad_input"]  # no decision record

    async def test_mcp_method_mismatch_is_refused(self, sidecar: Sidecar) -> None:
        async with aiohttp.ClientSession() as http:
            status, doc = await post(
                http, sidecar, self.body("pods_list", {}), self.modern("tools/list")
            )
        assert status == 400
        assert doc["error"]["code"] == -32020  # type: ignore[index]

    async def test_mcp_method_is_required_under_the_modern_revision(self, sidecar: Sidecar) -> None:
        headers = self.modern("tools/call", "pods_list")
        del headers["Mcp-Method"]
        async with aiohttp.ClientSession() as http:
            status, doc = await post(http, sidecar, self.body("pods_list", {}), headers)
        assert status == 400 and doc["error"]["code"] == -32020  # type: ignore[index]

    async def test_a_duplicated_routing_header_is_refused(self, sidecar: Sidecar) -> None:
        async with aiohttp.ClientSession() as http:
            headers = CIMultiDict(self.modern("tools/call", "pods_list"))
            headers.add("Mcp-Name", "resources_delete")
            async with http.post(
                sidecar.url, data=self.body("pods_list", {}), headers=headers
            ) as r:
                assert r.status == 400
                assert (await r.json())["error"]["code"] == -32020

    async def test_a_mismatching_header_under_an_older_revision_is_refused_too(
        self, sidecar: Sidecar
    ) -> None:
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, sidecar.url)
            headers = {**session_headers(sid), "Mcp-Name": "pods_list"}
            bad = {**CALL, "params": {"name": "resources_delete", "arguments": {}}}
            status, doc = await post(http, sidecar, jsonrpc.dumps(bad), headers)
        assert status == 400 and doc["error"]["code"] == -32020  # type: ignore[index]

    async def test_an_mcp_param_header_disagreeing_with_its_argument_is_refused(
        self, sidecar: Sidecar
    ) -> None:
        async with aiohttp.ClientSession() as http:
            listing = jsonrpc.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/list",
                    "params": {
                        "_meta": {
                            "io.modelcontextprotocol/protocolVersion": self.MODERN,
                            "io.modelcontextprotocol/clientCapabilities": {},
                        }
                    },
                }
            )
            status, _ = await post(http, sidecar, listing, self.modern("tools/list"))
            assert status == 200  # the sidecar now knows pods_top's inputSchema
            body = self.body("pods_top", {"namespace": "payments"})
            ok = self.modern("tools/call", "pods_top", **{"Mcp-Param-Namespace": "payments"})
            status, doc = await post(http, sidecar, body, ok)
            assert status == 200 and "result" in doc, doc
            lying = self.modern("tools/call", "pods_top", **{"Mcp-Param-Namespace": "kube-system"})
            status, doc = await post(http, sidecar, body, lying)
            assert status == 400 and doc["error"]["code"] == -32020  # type: ignore[index]
            missing = self.modern("tools/call", "pods_top")
            status, doc = await post(http, sidecar, body, missing)
            assert status == 400 and doc["error"]["code"] == -32020  # type: ignore[index]

    async def test_matching_modern_headers_pass(self, sidecar: Sidecar) -> None:
        async with aiohttp.ClientSession() as http:
            status, doc = await post(
                http,
                sidecar,
                self.body("pods_list", {"namespace": "payments"}),
                self.modern("tools/call", "pods_list"),
            )
        assert status == 200, doc
