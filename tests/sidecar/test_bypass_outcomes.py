"""Each forwarded call's outcome is audited, linked to its decision; a hang or crash
mid-answer gives the client a JSON-RPC error within the upstream timeout.

Before this, a decision record was all the audit held, so a call whose answer
never came looked like one that worked; an upstream that fell silent on an SSE
answer kept the client waiting for the idle-stream timeout, and one that died
mid-stream left a traceback and a cut stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from palisade.audit import verify_files
from sidecar import jsonrpc
from sidecar.settings import Limits
from tests.sidecar.hostile_upstream import hostile_upstream, messages_in
from tests.sidecar.proxy.conftest import Sidecar, auth, raw_session, run_sidecar, session_headers

FAST = Limits(upstream_timeout_s=1.0, idle_stream_timeout_s=60.0)
CALL = {
    "jsonrpc": "2.0",
    "id": 9,
    "method": "tools/call",
    "params": {"name": "pods_list", "arguments": {"namespace": "payments"}},
}
PROGRESS = json.dumps(
    {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1}}
)


async def _outcomes(sc: Sidecar) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decision of the one call and its outcome, once the chain verified."""
    await sc.core.outcomes_written()
    assert verify_files([sc.audit_path]).ok
    records = sc.audit()
    (decision,) = [r for r in records if r["kind"] == "decision" and r["tool"] == "pods_list"]
    outcomes = [r for r in records if r["kind"] == "outcome"]
    assert len(outcomes) == 1, outcomes
    assert outcomes[0]["details"]["call_id"] == decision["details"]["call_id"]
    assert outcomes[0]["request_id"] == decision["request_id"] == "9"
    return decision, outcomes[0]


async def test_a_completed_call_has_an_outcome_linked_to_its_decision(tmp_path: Path) -> None:
    async with hostile_upstream() as h, run_sidecar(h.url, tmp_path) as sc:
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            async with http.post(sc.url, json=CALL, headers=session_headers(sid)) as r:
                assert "result" in json.loads(await r.read())
        _, outcome = await _outcomes(sc)
    assert outcome["details"]["outcome"] == "completed"
    assert outcome["details"]["tool"] == "pods_list"
    assert outcome["session"] == sid


@pytest.mark.parametrize("before", [b"", f"data: {PROGRESS}\n\n".encode(), b": ping\n\n"])
async def test_an_upstream_silent_mid_stream_times_out_with_an_error(
    tmp_path: Path, before: bytes
) -> None:
    async with hostile_upstream() as h:

        async def hang(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            if before:
                await resp.write(before)
            for _ in range(20):  # keep-alives are no answer and do not extend the wait
                await asyncio.sleep(0.25)
                await resp.write(b": still here\n\n")
            return resp

        h.handlers["tools/call"] = hang
        async with run_sidecar(h.url, tmp_path, limits=FAST) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                t0 = time.monotonic()
                async with http.post(sc.url, json=CALL, headers=session_headers(sid)) as r:
                    raw = await r.read()
                elapsed = time.monotonic() - t0
            _, outcome = await _outcomes(sc)
    assert elapsed < 3.0  # the upstream timeout (1s), not the idle timeout (60s)
    (err,) = [d for d in messages_in(raw) if "error" in d][:1]
    assert err["id"] == 9 and err["error"]["code"] == jsonrpc.LIMIT_EXCEEDED
    assert outcome["details"]["outcome"] == "timed_out"


@pytest.mark.parametrize("framing", ["sse", "json"])
async def test_an_upstream_that_dies_mid_answer_gives_an_error_not_a_cut_stream(
    tmp_path: Path, framing: str
) -> None:
    async with hostile_upstream() as h:

        async def die(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            if framing == "sse":
                resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            else:
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = 500
            await resp.prepare(request)
            await resp.write(f'data: {PROGRESS}\n\ndata: {{"jsonrpc"'.encode())
            assert request.transport is not None
            request.transport.abort()  # the process died
            return resp

        h.handlers["tools/call"] = die
        async with run_sidecar(h.url, tmp_path, limits=FAST) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                async with http.post(sc.url, json=CALL, headers=session_headers(sid)) as r:
                    raw = await r.read()  # a complete body: no ClientPayloadError here
            _, outcome = await _outcomes(sc)
    docs = messages_in(raw) if framing == "sse" else [json.loads(raw)]
    errors = [d for d in docs if "error" in d]
    assert errors and errors[-1]["id"] == 9
    assert errors[-1]["error"]["code"] == jsonrpc.UPSTREAM_UNAVAILABLE
    assert outcome["details"]["outcome"] == "upstream_error"


async def test_a_stream_that_ends_without_the_answer_gets_an_error(tmp_path: Path) -> None:
    async with hostile_upstream() as h:

        async def ends(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(f"data: {PROGRESS}\n\n".encode())
            await resp.write_eof()
            return resp

        h.handlers["tools/call"] = ends
        async with run_sidecar(h.url, tmp_path, limits=FAST) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                async with http.post(sc.url, json=CALL, headers=session_headers(sid)) as r:
                    raw = await r.read()
            _, outcome = await _outcomes(sc)
    assert [d["id"] for d in messages_in(raw) if "error" in d][:1] == [9]
    assert outcome["details"]["outcome"] == "upstream_error"


async def test_a_client_that_goes_away_is_recorded_as_gone(tmp_path: Path) -> None:
    async with hostile_upstream() as h:
        started = asyncio.Event()

        async def slow(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(f"data: {PROGRESS}\n\n".encode())
            started.set()
            await asyncio.sleep(5)
            return resp

        h.handlers["tools/call"] = slow
        async with run_sidecar(h.url, tmp_path) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                async with http.post(sc.url, json=CALL, headers=session_headers(sid)) as r:
                    await r.content.readuntil(b"\n\n")
                    await started.wait()
            for _ in range(100):
                if any(r["kind"] == "outcome" for r in sc.audit()):
                    break
                await asyncio.sleep(0.05)
            _, outcome = await _outcomes(sc)
    assert outcome["details"]["outcome"] == "client_gone"


async def test_a_legacy_call_left_unanswered_times_out_on_the_stream(tmp_path: Path) -> None:
    async with hostile_upstream() as h:

        async def swallow(request: web.Request, msg: dict[str, Any]) -> web.StreamResponse:
            return web.Response(status=202, text="Accepted")  # and never answers

        h.handlers["legacy tools/call"] = swallow
        async with run_sidecar(h.url, tmp_path, limits=FAST) as sc:
            async with aiohttp.ClientSession() as http:
                headers = {**auth(), "Accept": "text/event-stream"}
                async with http.get(sc.base + "/sse", headers=headers) as stream:
                    endpoint = (await stream.content.readuntil(b"\n\n")).decode()
                    path = endpoint.split("data: ", 1)[1].strip()
                    for doc in (
                        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        CALL,
                    ):
                        async with http.post(sc.base + path, json=doc, headers=auth()) as r:
                            assert r.status == 202
                    t0 = time.monotonic()
                    buf = b""
                    while b'"id":9' not in buf:
                        buf += await asyncio.wait_for(stream.content.readany(), 5)
                    elapsed = time.monotonic() - t0
            _, outcome = await _outcomes(sc)
    err = next(d for d in messages_in(buf) if d.get("id") == 9)
    assert err["error"]["code"] == jsonrpc.LIMIT_EXCEEDED
    assert elapsed < 3.0
    assert outcome["details"]["outcome"] == "timed_out"
