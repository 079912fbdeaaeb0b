"""The client's answers to the server's requests: only an answer to a request the
server sent and the sidecar passed to that client goes upstream, once; it is audited
(its content as a digest only); any other is refused before the upstream and audited."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from sidecar import jsonrpc
from tests.sidecar.hostile_upstream import hostile_upstream
from tests.sidecar.proxy.conftest import raw_session, session_headers
from tests.sidecar.quarantine.test_every_path_inspected import (
    _asks_then_answers,
    _server_request,
    bundle_allowing,
    call,
    guarded,
)

SECRET_TYPED = "hunter2-the-users-password"


def reply(rid: Any, text: str = SECRET_TYPED) -> dict[str, Any]:
    content = {"type": "text", "text": text}
    result = {"role": "assistant", "content": content, "model": "m"}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def test_only_answers_to_passed_requests_reach_the_upstream_once(tmp_path: Path) -> None:
    asked = [
        _server_request("sampling/createMessage", "s1"),  # allowed: passed to the client
        _server_request("elicitation/create", "s2"),  # refused by the bundle
    ]
    async with hostile_upstream() as h:
        _asks_then_answers(h, asked, answered=1)  # the sidecar's refusal of s2
        bundle = bundle_allowing(tmp_path, "sampling")
        async with guarded(h, tmp_path, bundle) as sc, aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            headers = session_headers(sid)
            async with http.post(sc.url, json=call(tool="pods_list"), headers=headers) as r:
                assert r.status == 200
                await r.read()
            statuses = {}
            for name, doc in (
                ("first", reply("s1")),
                ("again", reply("s1")),
                ("refused request", reply("s2")),
                ("never asked", reply("s9")),
                ("other id form", reply(1)),
            ):
                async with http.post(sc.url, json=doc, headers=headers) as r:
                    statuses[name] = (r.status, await r.text())
            records = sc.audit()
    got = [m for m in h.received if m.get("id") in ("s1", "s2", "s9", 1) and "result" in m]
    assert [m["id"] for m in got] == ["s1"], "only the first answer to the passed request"
    assert statuses["first"][0] == 202
    for name in ("again", "refused request", "never asked", "other id form"):
        status, body = statuses[name]
        assert status == 400, name
        assert json.loads(body)["error"]["code"] == jsonrpc.POLICY_DENIED, name
    (answered,) = [r for r in records if r["kind"] == "server_request_answer"]
    assert answered["tool"] == "sampling/createMessage" and answered["decision"] == "allow"
    assert answered["request_id"] == "s1" and answered["session"] == sid
    assert answered["arguments_digest"], "the answer is recorded as a digest"
    assert SECRET_TYPED not in json.dumps(records), "what the user typed is not in the audit"
    refusals = [
        r
        for r in records
        if r["kind"] == "bad_input" and r["request_id"] in ("s1", "s2", "s9", "1")
    ]
    assert len(refusals) == 4


async def test_another_client_cannot_answer_a_request_passed_to_this_one(tmp_path: Path) -> None:
    async with hostile_upstream() as h:
        _asks_then_answers(h, [_server_request("sampling/createMessage", "s1")], answered=0)
        bundle = bundle_allowing(tmp_path, "sampling")
        async with guarded(h, tmp_path, bundle) as sc, aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            async with http.post(
                sc.url, json=call(tool="pods_list"), headers=session_headers(sid)
            ) as r:
                await r.read()
            other = await raw_session(http, sc.url)  # the same agent, another session
            async with http.post(sc.url, json=reply("s1"), headers=session_headers(other)) as r:
                assert r.status == 400
            async with http.post(sc.url, json=reply("s1"), headers=session_headers(sid)) as r:
                assert r.status == 202
    assert [m["id"] for m in h.received if "result" in m and m.get("id") == "s1"] == ["s1"]
