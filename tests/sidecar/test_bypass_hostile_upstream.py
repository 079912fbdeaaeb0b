"""A hostile upstream cannot slip an unfiltered tools/list or an unguarded result past the proxy.

Two mechanisms: answering with an id of another JSON type or form than the
request's (request 1, answer ``"1"``, ``1.0``, ``true``, ``" 1"``, ``"0x1"``),
which clients still match; and framing SSE in ways a stricter or a laxer parser
splits differently (CR, LF and CRLF line ends in any mix, a BOM, ``data:``
without its space, comments, fields without a colon, events of another type).
The sidecar matches answers as the loosest client does, forwards every answer with
the request's exact id, reads SSE as the standard does and forwards only what it
parsed, re-encoded; what it cannot match or inspect is withheld.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.gate import UNTRUSTED_META_KEY
from sidecar.sessions import id_keys
from sidecar.sse import EventSplitter, parse_block
from tests.sidecar.hostile_upstream import (
    TOOLS,
    Hostile,
    answer,
    hostile_upstream,
    listed_tools,
    messages_in,
    sse,
    tool_names_seen,
    whatwg_events,
)
from tests.sidecar.proxy.conftest import raw_session, run_sidecar, session_headers

#: Forms of the id 1 that some client matches to request 1.
ID_FORMS: list[Any] = [1, 1.0, True, "1", " 1", "1 ", "01", "1.0", "1e0", "0x1", "+1", "\u0661"]


def test_every_form_clients_match_shares_a_key_with_the_request() -> None:
    for form in ID_FORMS:
        assert id_keys(form) & id_keys(1), form
    assert id_keys("abc") & id_keys("abc")
    assert not id_keys(2) & id_keys(1)
    assert not id_keys(None) and not id_keys([1]) and not id_keys({"a": 1})


@given(st.integers(-(2**60), 2**60))
def test_an_integer_id_and_its_string_forms_match(n: int) -> None:
    for form in (n, str(n), f" {n}", float(n) if abs(n) < 2**53 else n):
        assert id_keys(form) & id_keys(n)


async def _tools_list(h: Hostile, tmp: Path, rid: Any = 1) -> tuple[bytes, str]:
    """Raw bytes of the sidecar's answer to a tools/list, and its Content-Type."""
    async with run_sidecar(h.url, tmp) as sc, aiohttp.ClientSession() as http:
        sid = await raw_session(http, sc.url)
        body = {"jsonrpc": "2.0", "id": rid, "method": "tools/list", "params": {}}
        async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
            return await r.read(), r.headers.get("Content-Type", "")


def _assert_filtered(raw: bytes, rid: Any) -> None:
    docs = messages_in(raw) if not raw.lstrip().startswith(b"{") else [json.loads(raw)]
    assert "helm_install" not in tool_names_seen(docs), raw
    answers = [d for d in docs if "result" in d or "error" in d]
    for d in answers:
        assert d["id"] == rid and type(d["id"]) is type(rid), d  # the request's own id


@pytest.mark.parametrize("form", ID_FORMS[1:], ids=repr)
@pytest.mark.parametrize("framing", ["json", "sse"])
async def test_an_answer_with_another_form_of_the_id_is_still_filtered(
    tmp_path: Path, form: Any, framing: str
) -> None:
    async with hostile_upstream() as h:

        async def tools_list(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            doc = json.dumps(answer(form, listed_tools()))
            if framing == "json":
                return web.Response(body=doc, content_type="application/json")
            return await sse(request, f"event: message\ndata: {doc}\n\n".encode())

        h.handlers["tools/list"] = tools_list
        raw, _ = await _tools_list(h, tmp_path)
    _assert_filtered(raw, 1)
    assert b"pods_list" in raw  # the answer itself came through, filtered


@pytest.mark.parametrize("framing", ["json", "sse"])
async def test_an_answer_to_no_request_is_withheld(tmp_path: Path, framing: str) -> None:
    """An unwatched request's stream carries a tools/list answer for another id."""
    async with hostile_upstream() as h:

        async def ping(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            stray = json.dumps(answer(msg["id"] + 1, listed_tools()))
            own = json.dumps(answer(msg["id"], {}))
            if framing == "json":
                return web.Response(body=stray, content_type="application/json")
            return await sse(request, f"data: {stray}\n\n".encode(), f"data: {own}\n\n".encode())

        h.handlers["ping"] = ping
        async with run_sidecar(h.url, tmp_path) as sc, aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            body = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
            async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                raw = await r.read()
    assert b"helm_install" not in raw and b"pods_list" not in raw
    docs = messages_in(raw) if framing == "sse" else [json.loads(raw)]
    assert all(d["id"] == 5 for d in docs), docs


@pytest.mark.parametrize(
    "ctype", ["Application/JSON", "text/plain; x=application/json", "text/html", ""]
)
async def test_a_body_is_inspected_whatever_its_content_type_says(
    tmp_path: Path, ctype: str
) -> None:
    async with hostile_upstream() as h:

        async def tools_list(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            resp = web.Response(body=json.dumps(answer(msg["id"], listed_tools())).encode())
            resp.headers["Content-Type"] = ctype
            return resp

        h.handlers["tools/list"] = tools_list
        raw, out_type = await _tools_list(h, tmp_path)
    assert out_type == "application/json"
    _assert_filtered(raw, 1)


async def test_a_message_that_is_request_and_answer_at_once_is_withheld(tmp_path: Path) -> None:
    async with hostile_upstream() as h:

        async def tools_list(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            both = {**answer(msg["id"], listed_tools()), "method": "sampling/createMessage"}
            return await sse(request, f"data: {json.dumps(both)}\n\n".encode())

        h.handlers["tools/list"] = tools_list
        raw, _ = await _tools_list(h, tmp_path)
    assert b"helm_install" not in raw


# -- SSE framing ---------------------------------------------------------------------

_ANSWER = json.dumps(answer(1, listed_tools()))
_EOLS = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def hostile_streams(draw: st.DrawFn) -> bytes:
    """An SSE answer to tools/list 1 in adversarial but standard-conforming framing."""
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append("\ufeff")
    for _ in range(draw(st.integers(0, 3))):  # noise before the answer
        kind = draw(st.sampled_from(["comment", "retry", "idonly", "other-event", "fieldonly"]))
        eol = draw(_EOLS)
        parts.append(
            {
                "comment": f": keep-alive{eol}{eol}",
                "retry": f"retry: 10{eol}{eol}",
                "idonly": f"id: x{eol}{eol}",
                "other-event": f"event: note{eol}data: {{}}{eol}{eol}",
                "fieldonly": f"data{eol}{eol}",
            }[kind]
        )
    eol = draw(_EOLS)
    space = draw(st.sampled_from(["", " "]))
    lines = []
    if draw(st.booleans()):
        lines.append(f"event:{space}message")
    if draw(st.booleans()):
        lines.append(": inside")
    lines.append(f"data:{space}{_ANSWER}")
    end = draw(_EOLS)
    parts.append(eol.join(lines) + end + draw(_EOLS))
    return "".join(parts).encode("utf-8")


@st.composite
def chunked(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=6))))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True) if a < b]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_splitter_reads_any_framing_and_chunking_as_the_standard(data: st.DataObject) -> None:
    stream = data.draw(hostile_streams())
    chunks = data.draw(chunked(stream))
    sp = EventSplitter(1 << 20)
    blocks = [b for c in chunks for b in sp.feed(c)]
    got = [(b.event.event or "message", b.event.data) for b in map(parse_block, blocks) if b.event]
    assert got == whatwg_events(stream)


@st.composite
def smuggling_streams(draw: st.DrawFn) -> bytes:
    """Streams in which a lax and a strict reader disagree about where events end."""
    eol = draw(_EOLS)
    hidden = f"data: {_ANSWER}"
    cover = draw(
        st.sampled_from(
            [
                f"event: note{eol}data: x\n\r{hidden}\n\n",  # LF CR: a blank line to the standard
                f"event: note\rdata: x\r\r{hidden}\r\r",
                f"\ufeff{hidden}{eol}{eol}",  # a BOM: lax readers see no data field
                f"event: note{eol}{hidden}{eol}{eol}",
                f": c\r{hidden}\r\n\r\n",
                f"data:{_ANSWER}{eol}{eol}",
            ]
        )
    )
    return cover.encode("utf-8")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(stream=st.one_of(hostile_streams(), smuggling_streams()), data=st.data())
def test_no_framing_gets_an_unfiltered_list_past_the_sidecar(
    tmp_path: Path, stream: bytes, data: st.DataObject
) -> None:
    chunks = data.draw(chunked(stream))

    async def run() -> bytes:
        async with hostile_upstream() as h:

            async def tools_list(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
                return await sse(request, *chunks)

            h.handlers["tools/list"] = tools_list
            raw, ctype = await _tools_list(h, tmp_path)
            assert ctype == "text/event-stream"
            return raw

    raw = asyncio.run(run())
    _assert_filtered(raw, 1)
    assert b"\r" not in raw and not raw.startswith(b"\xef\xbb\xbf")  # re-encoded, not relayed


async def test_an_untrusted_result_with_another_id_form_is_still_marked(tmp_path: Path) -> None:
    async with hostile_upstream() as h:
        h.handlers["tools/list"] = lambda r, m: _json(
            answer(m["id"], listed_tools([*TOOLS, {**TOOLS[0], "name": "pods_log"}]))
        )
        h.handlers["tools/call"] = lambda r, m: _json(
            answer(str(m["id"]), {"content": [{"type": "text", "text": "log"}]})
        )
        async with run_sidecar(h.url, tmp_path) as sc, aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
            async with http.post(sc.url, json=listing, headers=session_headers(sid)) as r:
                await r.read()
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "pods_log", "arguments": {"namespace": "payments"}},
            }
            async with http.post(sc.url, json=call, headers=session_headers(sid)) as r:
                doc = json.loads(await r.read())
    assert doc["id"] == 2
    assert doc["result"]["_meta"][UNTRUSTED_META_KEY] is True


async def _json(doc: dict[str, Any]) -> web.StreamResponse:
    return web.json_response(doc)
