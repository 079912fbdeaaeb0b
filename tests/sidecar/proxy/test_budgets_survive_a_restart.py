"""A killed and restarted ``palisade sidecar`` still knows what each agent spent.

The real process, raw HTTP, the example server upstream: an agent makes its
allowed mutating calls, the sidecar is killed with SIGKILL (no shutdown hook
runs), a new process starts on the same state dir, and the agent's next
mutation, in a new session, waits for a human.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest
import yaml

from .conftest import BUNDLE, UpstreamProc, answer_of, raw_session, session_headers, stop_process
from .test_sidecar_process import ready, start_sidecar
from .test_streams_and_sessions import call, list_tools

pytestmark = pytest.mark.e2e

ARGS = {"kind": "ConfigMap", "name": "cfg", "namespace": "payments"}


async def _mutate(http: aiohttp.ClientSession, url: str, sid: str, rid: int) -> dict[str, object]:
    body = call(rid, "resources_create_or_update", ARGS)
    async with http.post(url, json=body, headers=session_headers(sid)) as r:
        doc: dict[str, object] = await answer_of(r)
        return doc


async def test_the_agent_window_holds_across_a_sigkill_and_a_new_session(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    doc = yaml.safe_load(BUNDLE.read_text())
    doc["spec"]["budgets"]["mutationsPerAgent"] = {"limit": 2, "windowSeconds": 3600}
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "policy.yaml").write_text(yaml.safe_dump(doc))

    first = start_sidecar(upstream, tmp_path, bundle, "--allow-unsigned-bundles")
    try:
        await ready(first.base, 1)
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, first.url)
            await list_tools(http, first.url, sid)
            for rid in (10, 11):
                assert "result" in await _mutate(http, first.url, sid, rid)
    finally:
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)

    second = start_sidecar(upstream, tmp_path, bundle, "--allow-unsigned-bundles")
    try:
        await ready(second.base, 1)
        async with aiohttp.ClientSession() as http:
            sid = await raw_session(http, second.url)
            await list_tools(http, second.url, sid)
            held = await _mutate(http, second.url, sid, 12)
            reads = await _read(http, second.url, sid)
    finally:
        stop_process(second.proc)
    error = held["error"]
    assert isinstance(error, dict)
    assert error["data"]["rule"] == "budget/mutationsPerAgent"
    assert error["data"]["decision"] == "require_approval"
    assert "result" in reads  # reads are not mutations: still allowed


async def _read(http: aiohttp.ClientSession, url: str, sid: str) -> dict[str, object]:
    async with http.post(url, json=call(13, "pods_list", {}), headers=session_headers(sid)) as r:
        doc: dict[str, object] = await answer_of(r)
        return doc
