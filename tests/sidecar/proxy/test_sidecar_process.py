"""``palisade sidecar`` as a real process: bundle intake, gRPC Check on a Unix socket, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest

from palisade.bundle.load import load_file
from palisade.bundle.signing import generate_key, public_key_pem, sign_bundle, to_bytes
from palisade.v1 import policy_pb2, policy_pb2_grpc
from tests.harness.peers import free_port, wait_port

from .conftest import BUNDLE, UpstreamProc, raw_session, session_headers, stop_process
from .test_streams_and_sessions import call, events, list_tools

pytestmark = pytest.mark.e2e


class Proc:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, tmp: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.base = f"http://127.0.0.1:{port}"
        self.tmp = tmp


def start_sidecar(upstream: UpstreamProc, tmp: Path, bundle: Path, *extra: str) -> Proc:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "palisade.cli.main",
        "sidecar",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        upstream.url,
        "--server-name",
        "kubernetes-mcp",
        "--bundle",
        str(bundle),
        "--bundle-poll",
        "0.2",
        "--state-dir",
        str(tmp / "state"),
        "--audit-dir",
        str(tmp / "audit"),
        "--socket",
        str(tmp / "check.sock"),
        "--dev-auth",
        "--dev-token",
        "sre-token=sre-agent:payments",
        "--shutdown-grace",
        "5",
        "--log-level",
        "warning",
        *extra,
    ]
    log = (tmp / f"sidecar-{port}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return Proc(proc, port, tmp)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    (d / "policy.yaml").write_text(BUNDLE.read_text())
    return d


@pytest.fixture
def sidecar_proc(upstream: UpstreamProc, tmp_path: Path, bundle_dir: Path) -> Iterator[Proc]:
    p = start_sidecar(upstream, tmp_path, bundle_dir, "--allow-unsigned-bundles")
    yield p
    stop_process(p.proc)


async def ready(base: str, revision: int | None = None, within_s: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + within_s
    doc: dict[str, object] = {}
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(base + "/readyz") as r:
                doc = await r.json()
            if doc["ready"] and (revision is None or doc["bundle_revision"] == revision):
                return doc
            await asyncio.sleep(0.1)
    raise AssertionError(f"not ready: {doc}")


async def check(sock: Path, tool: str) -> policy_pb2.CheckResponse:
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        resp: policy_pb2.CheckResponse = await stub.Check(
            policy_pb2.CheckRequest(
                agent="sre-agent", server="kubernetes-mcp", server_version="1.4.2", tool=tool
            )
        )
        return resp


async def test_a_watched_bundle_is_swapped_and_a_broken_one_is_refused(
    sidecar_proc: Proc, bundle_dir: Path
) -> None:
    await ready(sidecar_proc.base, 1)
    resp = await check(sidecar_proc.tmp / "check.sock", "pods_list")
    assert resp.decision == policy_pb2.DECISION_ALLOW
    # a new bundle that refuses reads
    text = BUNDLE.read_text().replace(
        "decision: allow\n      reason: reads", "decision: deny\n      reason: reads"
    )
    (bundle_dir / "policy.yaml").write_text(text)
    await ready(sidecar_proc.base, 2)
    resp = await check(sidecar_proc.tmp / "check.sock", "pods_list")
    assert resp.decision == policy_pb2.DECISION_DENY and resp.rule_id == "allow-reads"
    # a broken bundle keeps revision 2 active
    (bundle_dir / "policy.yaml").write_text("apiVersion: palisade.dev/v1alpha1\nkind: Nope\n")
    await asyncio.sleep(0.6)
    doc = await ready(sidecar_proc.base, 2)
    assert doc["bundle_revision"] == 2
    async with aiohttp.ClientSession() as http, http.get(sidecar_proc.base + "/metrics") as r:
        assert "palisade_sidecar_bundle_errors_total 1.0" in await r.text()
    assert (sidecar_proc.tmp / "state" / "last-good.yaml").read_text() == text


async def test_a_restart_with_a_broken_path_runs_the_last_good_bundle(
    upstream: UpstreamProc, tmp_path: Path, bundle_dir: Path
) -> None:
    first = start_sidecar(upstream, tmp_path, bundle_dir, "--allow-unsigned-bundles")
    try:
        await ready(first.base, 1)
    finally:
        stop_process(first.proc)
    (bundle_dir / "policy.yaml").write_text("not: [a bundle")
    second = start_sidecar(upstream, tmp_path, bundle_dir, "--allow-unsigned-bundles")
    try:
        await ready(second.base)
        resp = await check(tmp_path / "check.sock", "pods_list")
        assert resp.decision == policy_pb2.DECISION_ALLOW
    finally:
        stop_process(second.proc)


async def test_signed_bundles_are_verified_and_unsigned_ones_refused(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    key = generate_key()
    (tmp_path / "trusted.pem").write_bytes(public_key_pem(key))
    signed_dir = tmp_path / "signed"
    signed_dir.mkdir()
    (signed_dir / "bundle.signed").write_bytes(to_bytes(sign_bundle(load_file(BUNDLE), [key], 7)))
    p = start_sidecar(
        upstream, tmp_path, signed_dir, "--trusted-key", str(tmp_path / "trusted.pem")
    )
    try:
        doc = await ready(p.base, 7)
        assert str(doc["bundle_digest"]).startswith("sha256:")
        # a forged envelope (other key) is refused; revision 7 stays
        forged = sign_bundle(load_file(BUNDLE), [generate_key()], 8)
        (signed_dir / "bundle.signed").write_bytes(to_bytes(forged))
        await asyncio.sleep(0.6)
        assert (await ready(p.base, 7))["bundle_revision"] == 7
    finally:
        stop_process(p.proc)
    # unsigned YAML while keys are configured: not ready, every call denied
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "policy.yaml").write_text(BUNDLE.read_text())
    (tmp_path / "state").rename(tmp_path / "old-state")
    q = start_sidecar(upstream, tmp_path, plain, "--trusted-key", str(tmp_path / "trusted.pem"))
    try:
        async with aiohttp.ClientSession() as http, http.get(q.base + "/readyz") as r:
            assert r.status == 503
            assert "no verified bundle" in " ".join((await r.json())["problems"])
    finally:
        stop_process(q.proc)


async def test_sigterm_finishes_in_flight_calls_then_exits(sidecar_proc: Proc) -> None:
    await ready(sidecar_proc.base)
    async with aiohttp.ClientSession() as http:
        sid = await raw_session(http, sidecar_proc.url)
        await list_tools(http, sidecar_proc.url, sid)
        # a standalone GET stream is open too: it must not hold the shutdown up
        listen = await http.get(
            sidecar_proc.url, headers={**session_headers(sid), "Accept": "text/event-stream"}
        )
        assert listen.status == 200
        body = call(5, "wait_rollout", {"namespace": "payments", "name": "term", "steps": 10}, "p")
        got = []
        async with http.post(sidecar_proc.url, json=body, headers=session_headers(sid)) as r:
            async for _, msg in events(r):
                if not got:
                    sidecar_proc.proc.send_signal(signal.SIGTERM)
                    t0 = time.monotonic()
                got.append(msg)
        assert await asyncio.to_thread(sidecar_proc.proc.wait, 10) == 0
        took = time.monotonic() - t0
        listen.close()
    assert got[-1]["id"] == 5 and "complete" in got[-1]["result"]["content"][0]["text"]
    assert took < 4.0  # well inside --shutdown-grace 5, though a GET stream was open
    records = [
        json.loads(line)
        for line in (sidecar_proc.tmp / "audit" / "audit.jsonl").read_text().splitlines()
    ]
    assert any(r.get("tool") == "wait_rollout" and r["decision"] == "allow" for r in records)
