"""An upstream answer with duplicate JSON keys cannot smuggle a secret past redaction.

Python keeps the last of duplicate keys, so ``{"text": "password: hunter2",
"text": "ok"}`` parses as harmless; forwarding the original bytes would still
show the first value to a client that keeps the first. The sidecar forwards what
it inspected instead. The upstream here is a raw aiohttp server, because an MCP
SDK server never writes duplicate keys.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from sidecar.jsonrpc import dumps_answer, loads_answer
from tests.harness.peers import free_port
from tests.sidecar.proxy.conftest import raw_session, session_headers

from .test_through_the_sidecar import guarded

pytestmark = pytest.mark.e2e

SECRET = "hunter2-do-not-show"
#: Answers that cannot be inspected as one JSON-RPC message, each carrying the secret.
BROKEN = {
    "not json": f'{{"jsonrpc":"2.0","id":7,"result":{{"text":"password: {SECRET}"}}'.encode(),
    "control character": f'{{"id":7,"result":{{"text":"token=\x01{SECRET}"}}}}'.encode(),
    "batch": f'[{{"jsonrpc":"2.0","id":7,"result":{{"text":"password: {SECRET}"}}}}]'.encode(),
}


def _duplicated_answer(request_id: object) -> bytes:
    first = json.dumps(f"password: {SECRET}")
    content = f'[{{"type":"text","text":{first},"text":"ok"}}]'
    rid = json.dumps(request_id)
    return f'{{"jsonrpc":"2.0","id":{rid},"result":{{"content":{content}}}}}'.encode()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.StreamResponse:
        msg = await request.json()
        if "id" not in msg:
            return web.Response(status=202)
        if msg["method"] == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "raw", "version": "1.0.0"},
            }
            resp = web.json_response({"jsonrpc": "2.0", "id": msg["id"], "result": result})
            resp.headers["Mcp-Session-Id"] = "raw-session"
            return resp
        if msg["method"] == "tools/list":
            tools = [{"name": "db_check", "inputSchema": {"type": "object"}}]
            return web.json_response(
                {"jsonrpc": "2.0", "id": msg["id"], "result": {"tools": tools}}
            )
        args = msg["params"]["arguments"]
        body = BROKEN.get(args.get("broken", ""), _duplicated_answer(msg["id"]))
        if args.get("sse"):
            stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await stream.prepare(request)
            await stream.write(b"event: message\ndata: " + body + b"\n\n")
            await stream.write_eof()
            return stream
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/mcp", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_what_is_forwarded_is_what_was_parsed() -> None:
    doc, standard = loads_answer('{"a":1,"b":{"c":2,"c":3}}')
    assert (doc, standard) == ({"a": 1, "b": {"c": 3}}, True)
    assert json.loads(dumps_answer(doc, standard)) == {"a": 1, "b": {"c": 3}}


@pytest.mark.parametrize(
    "text",
    [
        '{"big":123456789012345678901234567890,"neg":-18446744073709551617}',  # beyond 64 bits
        '{"x":NaN,"y":-Infinity}',  # Python's extensions: parsed leniently, written back as read
        '{"lone":"\\ud800","pair":"\\ud83d\\ude00"}',  # a lone surrogate has no UTF-8 form
        '{"f":[1.5,-0.0,1e300,5e-324],"u":"caf\u00e9 \\u0000"}',
    ],
)
def test_answers_round_trip_exactly(text: str) -> None:
    doc, standard = loads_answer(text.encode())
    again = dumps_answer(doc, standard)
    expected = json.loads(text)
    assert json.dumps(json.loads(again)) == json.dumps(expected)  # NaN != NaN: compare text


def test_text_that_is_not_json_is_refused() -> None:
    for bad in (b"{", b'{"a":1}x', b"\xff", b'{"a":"\x01"}'):
        with pytest.raises(ValueError):
            loads_answer(bad)


async def _call_db_check(upstream: str, tmp_path: Path, arguments: dict[str, object]) -> str:
    """One tools/call through a sidecar in front of ``upstream``: the answer's text."""

    class Up:
        url = upstream

    async with guarded(Up, tmp_path) as sc, aiohttp.ClientSession() as http:  # type: ignore[arg-type]
        sid = await raw_session(http, sc.url)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "db_check", "arguments": arguments},
        }
        async with http.post(sc.url, json=call, headers=session_headers(sid)) as r:
            assert r.status == 200
            return await r.text()


def _message_of(body: str) -> dict[str, Any]:
    """The JSON-RPC message of a JSON body or of the one event of an SSE body."""
    if body.lstrip().startswith("{"):
        return cast(dict[str, Any], json.loads(body))
    data = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return cast(dict[str, Any], json.loads("".join(data)))


@pytest.mark.parametrize("sse", [False, True], ids=["json answer", "sse answer"])
async def test_the_first_of_duplicate_keys_never_reaches_the_agent(
    raw_upstream: str, tmp_path: Path, sse: bool
) -> None:
    body = await _call_db_check(raw_upstream, tmp_path, {"sse": sse})
    assert SECRET not in body
    assert _message_of(body)["result"]["content"][0]["text"] == "ok"


@pytest.mark.parametrize("sse", [False, True], ids=["json answer", "sse answer"])
@pytest.mark.parametrize("broken", sorted(BROKEN))
async def test_an_answer_that_cannot_be_inspected_is_withheld(
    raw_upstream: str, tmp_path: Path, sse: bool, broken: str
) -> None:
    body = await _call_db_check(raw_upstream, tmp_path, {"sse": sse, "broken": broken})
    assert SECRET not in body
    if not sse:  # a JSON answer is replaced by an error; an SSE event is dropped
        doc = _message_of(body)
        assert doc["id"] == 7
        assert doc["error"]["message"] == (
            "the upstream answer is not a JSON-RPC object; it was withheld"
        )
