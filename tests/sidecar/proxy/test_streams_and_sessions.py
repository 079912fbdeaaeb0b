"""Streams, sessions and revisions through the sidecar, over raw HTTP (aiohttp client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar import jsonrpc
from sidecar.gate import UNTRUSTED_META_KEY
from sidecar.settings import Limits
from tests.harness.peers import free_port

from .conftest import (
    MCP_ACCEPT,
    Sidecar,
    UpstreamProc,
    answer_of,
    auth,
    raw_session,
    run_sidecar,
    session_headers,
    start_example_server,
    stop_process,
)

pytestmark = pytest.mark.e2e


def call(rid: int, name: str, args: dict[str, Any], progress: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": args}
    if progress:
        params["_meta"] = {"progressToken": progress}
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}


async def list_tools(
    http: aiohttp.ClientSession, url: str, sid: str, version: str = "2025-06-18"
) -> set[str]:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    async with http.post(url, json=body, headers=session_headers(sid, version=version)) as r:
        doc = await answer_of(r)
    return {t["name"] for t in doc["result"]["tools"]}


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
    """(event id, message) of an SSE response, as they arrive."""
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            eid = None
            data = []
            for line in block.decode().split("\n"):
                if line.startswith("id:"):
                    eid = line[3:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
            if data and data[0]:
                yield eid, json.loads("\n".join(data))


async def wait_for_file(path: Path, within_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        if await asyncio.to_thread(path.exists):
            return True
        await asyncio.sleep(0.05)
    return await asyncio.to_thread(path.exists)


@pytest.fixture(scope="module")
def json_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamProc]:
    up = start_example_server(tmp_path_factory.mktemp("up-json"), "--json-response")
    yield up
    stop_process(up.proc)


@pytest.mark.parametrize("version", ["2025-03-26", "2025-06-18", "2025-11-25"])
async def test_each_handshake_revision_is_proxied_and_governed(
    sidecar: Sidecar, version: str
) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url, version=version)
        names = await list_tools(http, sidecar.url, sid, version)
        assert "pods_list" in names and "resources_delete" not in names
        async with http.post(
            sidecar.url,
            json=call(3, "pods_list", {}),
            headers=session_headers(sid, version=version),
        ) as r:
            ok = await answer_of(r)
        async with http.post(
            sidecar.url,
            json=call(4, "resources_delete", {"kind": "Pod", "name": "p"}),
            headers=session_headers(sid, version=version),
        ) as r:
            denied = await answer_of(r)
    assert "payments-api" in ok["result"]["content"][0]["text"]
    assert denied["error"]["code"] == jsonrpc.POLICY_DENIED
    assert denied["id"] == 4


async def test_deleting_a_session_ends_it_upstream_and_here(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        assert sidecar.core.sessions.peek(sid) is not None
        async with http.delete(sidecar.url, headers=session_headers(sid)) as r:
            assert r.status == 200
        assert sidecar.core.sessions.peek(sid) is None
        async with http.post(
            sidecar.url, json=call(5, "pods_list", {}), headers=session_headers(sid)
        ) as r:
            assert r.status == 404  # the upstream no longer knows it


async def test_a_get_stream_is_opened_through_the_sidecar(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        h = {**session_headers(sid), "Accept": "text/event-stream"}
        async with http.get(sidecar.url, headers=h) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")


async def test_progress_then_result_on_one_post_stream(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        await list_tools(http, sidecar.url, sid)
        body = call(6, "wait_rollout", {"namespace": "payments", "name": "prog", "steps": 3}, "tok")
        async with http.post(sidecar.url, json=body, headers=session_headers(sid)) as r:
            got = [m async for _, m in events(r)]
    methods = [m.get("method") for m in got]
    assert methods == ["notifications/progress"] * 3 + [None]
    assert got[-1]["id"] == 6


async def test_a_dropped_stream_is_resumed_with_last_event_id(
    sidecar: Sidecar, upstream: UpstreamProc
) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        await list_tools(http, sidecar.url, sid)
        body = call(
            7, "wait_rollout", {"namespace": "payments", "name": "resume", "steps": 8}, "t7"
        )
        last_id = None
        async with http.post(sidecar.url, json=body, headers=session_headers(sid)) as r:
            async for eid, msg in events(r):
                if msg.get("method") == "notifications/progress" and eid:
                    last_id = eid
                    break
        assert last_id is not None
        h = {**session_headers(sid), "Accept": "text/event-stream", "Last-Event-ID": last_id}
        async with http.get(sidecar.url, headers=h) as r:
            assert r.status == 200
            final = None
            async for _, msg in events(r):
                if msg.get("id") == 7:
                    final = msg
                    break
    assert final is not None
    assert "complete" in final["result"]["content"][0]["text"]
    assert (upstream.state_dir / "finished-payments-resume").exists()
    assert not (upstream.state_dir / "cancelled-payments-resume").exists()


async def test_a_client_that_goes_away_cancels_the_upstream_work(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    async with run_sidecar(upstream.url, tmp_path, Limits(resume_grace_s=0.2)) as sc:
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            await list_tools(http, sc.url, sid)
            body = call(
                8, "wait_rollout", {"namespace": "payments", "name": "gone", "steps": 40}, "t8"
            )
            async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                async for _, msg in events(r):
                    if msg.get("method") == "notifications/progress":
                        break
        assert await wait_for_file(upstream.state_dir / "cancelled-payments-gone")
        assert not (upstream.state_dir / "finished-payments-gone").exists()
        await asyncio.sleep(0.3)
        assert not sc.core.background  # nothing left behind


async def test_a_cancellation_notification_passes_to_the_upstream(
    sidecar: Sidecar, upstream: UpstreamProc
) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        await list_tools(http, sidecar.url, sid)
        body = call(
            9, "wait_rollout", {"namespace": "payments", "name": "cancel", "steps": 40}, "t9"
        )
        async with http.post(sidecar.url, json=body, headers=session_headers(sid)) as r:
            async for _, msg in events(r):
                if msg.get("method") == "notifications/progress":
                    note = {
                        "jsonrpc": "2.0",
                        "method": "notifications/cancelled",
                        "params": {"requestId": 9, "reason": "operator changed their mind"},
                    }
                    async with http.post(sidecar.url, json=note, headers=session_headers(sid)) as n:
                        assert n.status == 202
                    break
    assert await wait_for_file(upstream.state_dir / "cancelled-payments-cancel")


class TestJsonResponses:
    async def test_json_answers_are_filtered_and_marked(
        self, json_upstream: UpstreamProc, tmp_path: Path
    ) -> None:
        async with run_sidecar(json_upstream.url, tmp_path) as sc, aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            names = await list_tools(http, sc.url, sid)
            assert "resources_delete" not in names and "pods_log" in names
            body = call(3, "pods_log", {"namespace": "payments", "name": "payments-api-0"})
            async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                assert r.headers["Content-Type"].startswith("application/json")
                doc = await r.json()
        assert doc["result"]["_meta"][UNTRUSTED_META_KEY] is True

    @pytest.mark.parametrize("size", [64 * 1024, 1024 * 1024])
    async def test_large_answers_arrive_whole(
        self, json_upstream: UpstreamProc, upstream: UpstreamProc, tmp_path: Path, size: int
    ) -> None:
        for up in (json_upstream, upstream):
            async with run_sidecar(up.url, tmp_path) as sc, aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                body = call(7, "blob", {"size": size})
                async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                    doc = await answer_of(r)
            assert len(doc["result"]["content"][0]["text"]) == size, up.url

    async def test_a_client_that_gives_up_on_a_json_answer_cancels_the_work(
        self, json_upstream: UpstreamProc, tmp_path: Path
    ) -> None:
        async with run_sidecar(json_upstream.url, tmp_path) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                await list_tools(http, sc.url, sid)
                body = call(
                    6, "wait_rollout", {"namespace": "payments", "name": "quit", "steps": 40}
                )
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.5):
                        async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                            await r.read()
            assert await wait_for_file(json_upstream.state_dir / "cancelled-payments-quit")
            assert not (json_upstream.state_dir / "finished-payments-quit").exists()
            await asyncio.sleep(0.2)
            assert not sc.core.background
            assert sc.core.metrics.in_flight._value.get() == 0

    async def test_a_slow_upstream_times_out_with_504_and_is_cancelled(
        self, json_upstream: UpstreamProc, tmp_path: Path
    ) -> None:
        async with run_sidecar(json_upstream.url, tmp_path, Limits(upstream_timeout_s=0.5)) as sc:
            async with aiohttp.ClientSession() as http:
                sid = await raw_session(http, sc.url)
                await list_tools(http, sc.url, sid)
                body = call(
                    4, "wait_rollout", {"namespace": "payments", "name": "slow", "steps": 30}
                )
                async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                    assert r.status == 504
                    doc = await r.json()
            assert doc["error"]["code"] == jsonrpc.UPSTREAM_UNAVAILABLE
            assert "0.5" in doc["error"]["message"]
            assert await wait_for_file(json_upstream.state_dir / "cancelled-payments-slow")


async def test_an_idle_stream_is_closed_with_an_error_and_the_work_cancelled(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    async with run_sidecar(upstream.url, tmp_path, Limits(idle_stream_timeout_s=0.4)) as sc:
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, sc.url)
            await list_tools(http, sc.url, sid)
            body = call(5, "wait_rollout", {"namespace": "payments", "name": "idle", "steps": 30})
            async with http.post(sc.url, json=body, headers=session_headers(sid)) as r:
                got = [m async for _, m in events(r)]
        assert got[-1]["id"] == 5
        assert got[-1]["error"]["code"] == jsonrpc.LIMIT_EXCEEDED
        assert await wait_for_file(upstream.state_dir / "cancelled-payments-idle")


async def test_an_unreachable_upstream_is_502_and_not_ready(tmp_path: Path) -> None:
    async with run_sidecar(f"http://127.0.0.1:{free_port()}", tmp_path) as sc:
        init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        async with aiohttp.ClientSession() as http:
            async with http.post(sc.url, json=init, headers={**MCP_ACCEPT, **auth()}) as r:
                assert r.status == 502
                assert (await r.json())["error"]["code"] == jsonrpc.UPSTREAM_UNAVAILABLE
            async with http.get(sc.base + "/readyz") as r:
                assert r.status == 503
                assert "upstream" in " ".join((await r.json())["problems"])


async def test_a_throttled_call_also_carries_retry_after(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url, token="busy-token")
        h = session_headers(sid, token="busy-token")
        statuses = []
        for rid in range(3):
            async with http.post(sidecar.url, json=call(rid + 10, "pods_list", {}), headers=h) as r:
                statuses.append((r.headers.get("Retry-After"), await answer_of(r)))
    retry, doc = statuses[-1]
    assert doc["error"]["code"] == jsonrpc.THROTTLED
    assert retry is not None and int(retry) >= 1
    assert statuses[0][0] is None


async def test_probes_and_metrics(sidecar: Sidecar) -> None:
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar.url)
        async with http.post(
            sidecar.url, json=call(3, "pods_list", {}), headers=session_headers(sid)
        ) as r:
            await r.read()
        async with http.get(sidecar.base + "/healthz") as r:
            assert r.status == 200
        async with http.get(sidecar.base + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["bundle_revision"] == 1
        async with http.get(sidecar.base + "/metrics") as r:
            text = await r.text()
        async with http.get(sidecar.base + "/.well-known/oauth-protected-resource") as r:
            assert (await r.json())["resource"].endswith("/mcp")
    (line,) = [
        x
        for x in text.splitlines()
        if x.startswith("palisade_decisions_total{")
        and 'decision="allow",rule="allow-reads",server=' in x
        and 'tool="pods_list"' in x
    ]
    assert line.endswith(" 1.0") and 'agent="' in line, line
    assert "palisade_sidecar_decisions_total" not in text  # one decision metric, not two
