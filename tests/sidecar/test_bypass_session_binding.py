"""A session belongs to the principal whose initialize created it, and to nobody else.

The upstream here accepts any session id it is shown (the worst case: a server
that does not check), so only the sidecar stands between an attacker and a
session, its budget and its approvals. Sessions exist in the sidecar only once the
upstream named them (``Mcp-Session-Id`` of an initialize answer; the legacy
``endpoint`` event); unknown ids create nothing, and a flood of new sessions
evicts only the flooder's own.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.sessions import Owner, SessionBook, SessionTaken
from tests.sidecar.hostile_upstream import hostile_upstream
from tests.sidecar.proxy.conftest import (
    MCP_ACCEPT,
    auth,
    raw_session,
    run_sidecar,
    session_headers,
)


def _call(rid: int, name: str = "pods_list", args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "tools/call",
        "params": {"name": name, "arguments": args or {"namespace": "payments"}},
    }


async def _post(
    http: aiohttp.ClientSession, url: str, doc: dict[str, Any], sid: str, token: str = "sre-token"
) -> tuple[int, dict[str, Any]]:
    async with http.post(url, json=doc, headers=session_headers(sid, token=token)) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else {}


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
def test_an_unknown_session_id_is_not_found_and_makes_no_entry(
    tmp_path_factory: Any, sid: str
) -> None:
    async def run() -> None:
        async with (
            hostile_upstream() as h,
            run_sidecar(h.url, tmp_path_factory.mktemp("s")) as sc,
            aiohttp.ClientSession() as http,
        ):
            status, doc = await _post(http, sc.url, _call(1), sid)
            assert status == 404, doc
            assert len(sc.core.sessions) == 0
            assert not [m for m in h.received if m.get("method") == "tools/call"]

    asyncio.run(run())


async def test_an_id_used_before_the_upstream_gives_it_out_is_not_claimed(tmp_path: Path) -> None:
    async with hostile_upstream() as h, run_sidecar(h.url, tmp_path) as sc:
        h.session_ids = ["predicted-id"]
        async with aiohttp.ClientSession() as http:
            status, _ = await _post(http, sc.url, _call(1), "predicted-id", token="search-token")
            assert status == 404  # the attacker came first: nothing to claim
            sid = await raw_session(http, sc.url)  # the victim's initialize names it
            assert sid == "predicted-id"
            status, doc = await _post(http, sc.url, _call(2), sid, token="search-token")
            assert status == 403, doc
            status, doc = await _post(http, sc.url, _call(3), sid)
            assert status == 200 and "result" in doc, doc


async def test_another_principal_cannot_list_get_or_delete_with_the_id(tmp_path: Path) -> None:
    async with (
        hostile_upstream() as h,
        run_sidecar(h.url, tmp_path) as sc,
        aiohttp.ClientSession() as http,
    ):
        sid = await raw_session(http, sc.url)
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        assert (await _post(http, sc.url, listing, sid, token="busy-token"))[0] == 403
        h2 = session_headers(sid, token="busy-token")
        async with http.get(sc.url, headers={**h2, "Accept": "text/event-stream"}) as r:
            assert r.status == 403
        async with http.delete(sc.url, headers=h2) as r:
            assert r.status == 403
        assert sc.core.sessions.peek(sid) is not None


async def test_a_new_session_id_per_call_does_not_refill_the_mutation_budget(
    tmp_path: Path,
) -> None:
    """The bundle allows 3 mutating calls per session; made-up ids give no fresh budget."""
    write = {"kind": "ConfigMap", "name": "x", "namespace": "payments"}
    async with (
        hostile_upstream() as h,
        run_sidecar(h.url, tmp_path) as sc,
        aiohttp.ClientSession() as http,
    ):
        sid = await raw_session(http, sc.url)
        for rid in range(1, 4):
            status, doc = await _post(
                http, sc.url, _call(rid, "resources_create_or_update", write), sid
            )
            assert "result" in doc, doc
        for rid, fresh in enumerate(["made-up-1", "made-up-2", sid + "x"], start=10):
            status, _ = await _post(
                http, sc.url, _call(rid, "resources_create_or_update", write), fresh
            )
            assert status == 404
        status, doc = await _post(http, sc.url, _call(20, "resources_create_or_update", write), sid)
        assert doc["error"]["data"]["decision"] == "require_approval", doc
    ran = [m for m in h.received if m.get("method") == "tools/call"]
    assert len(ran) == 3


async def test_flooding_new_sessions_evicts_only_the_flooders_own(tmp_path: Path) -> None:
    async with hostile_upstream() as h, run_sidecar(h.url, tmp_path) as sc:
        sc.core.sessions = SessionBook(max_sessions=16, max_per_owner=4)
        async with aiohttp.ClientSession() as http:
            victim = await raw_session(http, sc.url)
            flood = [await raw_session(http, sc.url, token="busy-token") for _ in range(40)]
            assert len(sc.core.sessions) <= 16
            status, doc = await _post(http, sc.url, _call(1), victim)
            assert status == 200 and "result" in doc
            assert (await _post(http, sc.url, _call(2), flood[-1], token="busy-token"))[0] == 200
            assert (await _post(http, sc.url, _call(3), flood[0], token="busy-token"))[0] == 404


async def test_an_upstream_reusing_a_bound_id_for_another_principal_is_withheld(
    tmp_path: Path,
) -> None:
    async with hostile_upstream() as h, run_sidecar(h.url, tmp_path) as sc:
        h.session_ids = ["same", "same"]
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {}},
            }
            async with http.post(
                sc.url, json=init, headers={**MCP_ACCEPT, **auth("search-token")}
            ) as r:
                assert r.status == 502
                assert "Mcp-Session-Id" not in r.headers
        assert sc.core.sessions.peek(sid) is not None
        assert sc.core.sessions.peek(sid).agent == "sre-agent"  # type: ignore[union-attr]


async def test_legacy_sessions_belong_to_the_stream_that_the_endpoint_named(
    tmp_path: Path,
) -> None:
    async with hostile_upstream() as h, run_sidecar(h.url, tmp_path) as sc:
        h.endpoint_ids = ["L1", "L1"]
        async with aiohttp.ClientSession() as http:
            headers = {**auth(), "Accept": "text/event-stream"}
            async with http.get(sc.base + "/sse", headers=headers) as stream:
                first = await stream.content.readuntil(b"\n\n")
                assert b"session_id=L1" in first
                ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
                async with http.post(
                    sc.base + "/messages/?session_id=L1", json=ping, headers=auth("busy-token")
                ) as r:
                    assert r.status == 403
                async with http.post(
                    sc.base + "/messages/?session_id=L2", json=ping, headers=auth()
                ) as r:
                    assert r.status == 404
                # the upstream names L1 again, to another principal: that stream ends unbound
                other = {**auth("busy-token"), "Accept": "text/event-stream"}
                async with http.get(sc.base + "/sse", headers=other) as second:
                    body = await asyncio.wait_for(second.read(), 5)
                assert b"endpoint" not in body
                assert sc.core.sessions.peek("sse:L1").agent == "sre-agent"  # type: ignore[union-attr]


# -- the book itself ---------------------------------------------------------------

OWNERS: list[Owner] = [("iss", f"sub{i}", f"agent{i}", "t", "") for i in range(4)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30)), max_size=120))
def test_no_owner_within_its_share_is_evicted_by_another(ops: list[tuple[int, int]]) -> None:
    book = SessionBook(max_sessions=12, max_per_owner=5)
    held: dict[int, set[str]] = {i: set() for i in range(4)}
    for who, n in ops:
        before = {i: {s for s in ids if book.peek(s) is not None} for i, ids in held.items()}
        sid = f"s{who}-{n}"
        book.bind(sid, OWNERS[who])
        held[who].add(sid)
        assert len(book) <= 12
        assert all(book.count_of(o) <= 5 for o in OWNERS)
        for i in range(4):
            if i != who and len(before[i]) <= 12 // 4:
                # within its fair share: another's session never costs it one
                assert all(book.peek(s) is not None for s in before[i])
            for s in held[i]:
                found = book.peek(s)
                assert found is None or found.owner == OWNERS[i]


def test_binding_an_id_of_another_owner_is_refused() -> None:
    book = SessionBook()
    book.bind("x", OWNERS[0])
    with pytest.raises(SessionTaken):
        book.bind("x", OWNERS[1])
    assert book.owned("x", OWNERS[1]) is None
    assert book.owned("x", OWNERS[0]) is not None


def test_bindings_outlive_a_restart_and_stay_their_owners(tmp_path: Path) -> None:
    store = tmp_path / "sessions.json"
    book = SessionBook(store=store)
    book.bind("kept", OWNERS[0])
    book.bind("sse:legacy", OWNERS[0])
    book.bind("gone", OWNERS[1])
    book.drop("gone")
    again = SessionBook(store=store)
    assert again.owned("kept", OWNERS[0]) is not None
    assert again.owned("kept", OWNERS[1]) is None
    assert again.peek("gone") is None and again.peek("sse:legacy") is None
