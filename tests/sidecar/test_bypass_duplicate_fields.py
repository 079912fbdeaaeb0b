"""A field that decides identity, session or routing, given twice, is refused (400, audited).

The proxy reading one copy and the upstream another is how a check is bypassed
(the session bound to this agent is checked, another agent's session is used), so
the proxy and the upstream must always see the same single value.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from sidecar import jsonrpc
from sidecar.http import (
    SINGLE_HEADERS,
    duplicated_header,
    forward_headers,
    session_query_values,
)
from tests.sidecar.bypass_harness import (
    JSON_HEADERS,
    Peer,
    call,
    raw_exchange,
    request_bytes,
    serve,
)
from tests.sidecar.proxy.conftest import UpstreamProc, start_example_server, stop_process

pytestmark = pytest.mark.e2e

AUTH = ("Authorization", "Bearer sre-token")
OTHER_AUTH = ("Authorization", "Bearer search-token")
BODY = json.dumps(call("pods_list", {"namespace": "payments"})).encode()

# -- pure parts, property-based -------------------------------------------------------

ROUTING = [
    "Authorization",
    "Mcp-Session-Id",
    "MCP-Protocol-Version",
    "Mcp-Method",
    "Mcp-Name",
    "Mcp-Param-Namespace",
    "Last-Event-ID",
    "Origin",
    "Content-Type",
]
names = st.sampled_from(
    [*ROUTING, "Accept", "traceparent", "baggage", "X-Other", "Mcp-Param-Other"]
).flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper(), n.replace("-", "_")]))
header_lists = st.lists(st.tuples(names, st.text("abc;, =", max_size=6)), max_size=10)


def _key(name: str) -> str:
    return name.lower().replace("_", "-")


@settings(max_examples=400, deadline=None)
@given(header_lists)
def test_a_routing_field_is_duplicated_exactly_when_it_appears_twice(
    headers: list[tuple[str, str]],
) -> None:
    counts: dict[str, int] = {}
    for name, _ in headers:
        k = _key(name)
        if k in SINGLE_HEADERS or k.startswith("mcp-param-"):
            counts[k] = counts.get(k, 0) + 1
    found = duplicated_header(headers)
    assert (found is not None) == any(c > 1 for c in counts.values())
    if found is not None:
        assert counts[found] > 1


@settings(max_examples=400, deadline=None)
@given(header_lists)
def test_the_upstream_is_sent_one_line_per_name_the_value_the_proxy_read(
    headers: list[tuple[str, str]],
) -> None:
    multi = CIMultiDict(headers)
    sent = forward_headers(multi)
    lowered = [k.lower() for k in sent]
    assert len(lowered) == len(set(lowered))  # never two lines of one name
    for name, value in sent.items():
        key = name.lower()
        assert key != "authorization"
        if key in SINGLE_HEADERS or key.startswith("mcp-param-"):
            assert value == multi.get(name)  # what the proxy itself reads: the first


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["session_id=a", "sessionId=b", "SESSION_ID=c", "session%5Fid=d", "x=1", "y=session_id"]
        ),
        max_size=5,
    ),
    st.sampled_from(["&", ";"]),
)
def test_every_spelling_of_the_session_parameter_counts(parts: list[str], sep: str) -> None:
    values = session_query_values(sep.join(parts))
    named = [p for p in parts if not p.startswith(("x=", "y="))]
    assert len(values) == len(named)


# -- through a real sidecar, raw HTTP --------------------------------------------------


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up"))
    yield up
    stop_process(up.proc)


@pytest.fixture(scope="module")
def legacy_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up-sse"), "--transport", "sse")
    yield up
    stop_process(up.proc)


@pytest.fixture
async def peer(upstream: UpstreamProc, tmp_path: Path) -> AsyncIterator[Peer]:
    async with serve(upstream.url, tmp_path) as sc:
        yield sc


def refused(peer: Peer, field: str) -> dict[str, Any]:
    """The audit record of a refused duplicate (the last one), the chain verified."""
    record = peer.verified()[-1]
    assert record["kind"] == "bad_input" and record["decision"] == "deny", record
    assert record["rule_id"] == "duplicate-field"
    assert record["details"]["field"] == field
    assert record["details"]["http_status"] == 400
    return record


PAIRS = [
    (("Mcp-Session-Id", "mine"), ("Mcp-Session-Id", "theirs")),
    (("Mcp-Session-Id", "mine"), ("mcp-session-id", "theirs")),
    (("MCP-Protocol-Version", "2025-06-18"), ("MCP-Protocol-Version", "2026-07-28")),
    (("Mcp-Method", "tools/call"), ("Mcp-Method", "tools/list")),
    (("Mcp-Name", "pods_list"), ("MCP-NAME", "resources_delete")),
    (("Mcp-Param-Namespace", "payments"), ("Mcp-Param-Namespace", "kube-system")),
    (("Mcp-Param-Namespace", "payments"), ("Mcp_Param_Namespace", "kube-system")),
    (("Last-Event-ID", "1"), ("Last-Event-ID", "2")),
    (("Origin", "http://127.0.0.1"), ("Origin", "http://evil.example")),
]
# (a repeated Content-Type, Content-Length or Host is refused by the HTTP parser
# itself: test_bypass_unrecorded_refusals.py shows that those are recorded too)


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0][0]}+{p[1][0]}")
async def test_a_repeated_routing_header_is_refused_on_every_method(
    peer: Peer, method: str, pair: tuple[tuple[str, str], tuple[str, str]]
) -> None:
    headers = [*JSON_HEADERS, AUTH, *pair]
    body = BODY if method == "POST" else b""
    answer = await raw_exchange(peer.port, request_bytes(method, "/mcp", headers, body))
    assert answer.status == 400, answer
    doc = answer.json()
    assert doc["error"]["code"] == jsonrpc.HEADER_MISMATCH
    record = refused(peer, pair[0][0].lower())
    assert record["agent"] == "sre-agent"  # the single token still names who tried
    assert record["details"]["method"] == method
    assert not [r for r in peer.audit() if r["kind"] == "decision"]


async def test_a_repeated_authorization_is_refused_and_names_nobody(peer: Peer) -> None:
    headers = [*JSON_HEADERS, AUTH, OTHER_AUTH]
    answer = await raw_exchange(peer.port, request_bytes("POST", "/mcp", headers, BODY))
    assert answer.status == 400
    record = refused(peer, "authorization")
    assert record["agent"] == "" and record["details"]["values"] == []  # no token recorded
    assert "sre-token" not in peer.audit_path.read_text()


@pytest.mark.parametrize(
    "query",
    [
        "session_id={sid}&session_id=other",
        "session_id={sid}&sessionId=other",
        "sessionId=other&session_id={sid}",
        "session_id={sid};session_id=other",
        "session_id={sid}&session%5Fid=other",
        "session_id={sid}&SESSION_ID=other",
        "session_id={sid}%26session_id%3Dother&session_id=other",
    ],
)
async def test_a_repeated_legacy_session_parameter_is_refused(
    legacy_upstream: UpstreamProc, tmp_path: Path, query: str
) -> None:
    async with (
        serve(legacy_upstream.url, tmp_path) as sc,
        aiohttp.ClientSession() as http,
        http.get(sc.base + "/sse", headers={AUTH[0]: AUTH[1]}) as stream,
    ):
        # a real legacy session of this agent: the endpoint event names it
        buf = b""
        while b"session_id=" not in buf or not buf.rstrip(b" ").endswith((b"\n", b"\r")):
            buf += await asyncio.wait_for(stream.content.readany(), 10)
        sid = buf.split(b"session_id=")[1].split()[0].decode()
        ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
        target = "/messages/?" + query.format(sid=sid)
        answer = await raw_exchange(
            sc.port, request_bytes("POST", target, [*JSON_HEADERS, AUTH], ping)
        )
        assert answer.status == 400, answer
        record = refused(sc, "session_id")
        assert record["agent"] == "sre-agent"
        # the session itself is fine: given once, the same message is accepted
        single = "/messages/?session_id=" + sid
        answer = await raw_exchange(
            sc.port, request_bytes("POST", single, [*JSON_HEADERS, AUTH], ping)
        )
        assert answer.status == 202, answer


async def test_single_fields_still_pass(peer: Peer) -> None:
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
    # Accept is list-valued: two lines are one field, joined for the upstream
    headers = [
        ("Content-Type", "application/json"),
        ("Accept", "application/json"),
        ("Accept", "text/event-stream"),
        AUTH,
        ("Mcp-Param-A", "1"),
        ("Mcp-Param-B", "2"),
    ]
    answer = await raw_exchange(
        peer.port, request_bytes("POST", "/mcp", headers, json.dumps(init).encode())
    )
    assert answer.status == 200, answer
    assert answer.json()["result"]["protocolVersion"] == "2025-06-18"
    assert not [r for r in peer.audit() if r["kind"] == "bad_input"]
