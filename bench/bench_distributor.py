"""Distributor push: N subscriber streams in separate processes against one distributor.

Measures, for 1 (baseline), 1,000 and 5,000 subscribers (``--quick``: 1, 100,
1,000):

- time from a bundle change to each subscriber's ACK (p50/p99/max), where the
  change is a rollback through the HTTP API, so the number covers publishing
  (SQLite transaction), signing per scope, the push and the ACK; file mode adds
  its poll interval and debounce on top (1 s and 0.2 s by default);
- distributor RSS per idle subscriber (RSS with N idle streams minus RSS before
  any, over N);
- distributor CPU seconds used during the push.

Subscribers are raw ``Subscribe`` streams (Hello, then ACK every bundle, after
checking its Ed25519 signature once per distinct envelope per process), many
per process over a few HTTP/2 connections, like a fleet behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench.common import Report, Target, percentile

ROOT = Path(__file__).resolve().parents[1]
STREAMS_PER_CHANNEL = 250

POLICY = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata: {{name: bench}}
spec:
  servers:
    - name: kubernetes-mcp
      tools: [{{name: pods_log, risk: read}}, {{name: resources_delete, risk: destructive}}]
  tenants: [{{name: payments, namespaces: [payments]}}]
  agents: [{{id: sre-agent, tenant: payments}}]
  rules:
    - {{id: reads, match: {{servers: [kubernetes-mcp], risk: [read]}}, decision: allow,
       reason: "{reason}"}}
"""


# -- subscriber worker (runs in a child process) --------------------------------
def _worker(target: str, prefix: str, n: int, trusted_pem: bytes, conn: Connection) -> None:
    asyncio.run(_worker_main(target, prefix, n, trusted_pem, conn))


async def _worker_main(
    target: str, prefix: str, n: int, trusted_pem: bytes, conn: Connection
) -> None:
    import grpc

    from palisade.bundle import TrustedKeys, load_public_key, verify_envelope
    from palisade.v1 import distribution_pb2, distribution_pb2_grpc

    trusted = TrustedKeys([load_public_key(trusted_pem)])
    verified: set[str] = set()
    acks: dict[int, list[float]] = {}
    latest = [0] * n
    channels = [
        grpc.aio.insecure_channel(target)
        for _ in range((n + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)
    ]

    async def stream(i: int) -> None:
        stub = distribution_pb2_grpc.DistributionServiceStub(channels[i // STREAMS_PER_CHANNEL])
        call = stub.Subscribe()
        ident = distribution_pb2.ClientIdentity(
            kind=distribution_pb2.CLIENT_KIND_SIDECAR,
            id=f"{prefix}-{i}",
            server="kubernetes-mcp",
            namespace="bench",
            pod=f"{prefix}-{i}",
        )
        await call.write(
            distribution_pb2.SubscribeRequest(hello=distribution_pb2.Hello(identity=ident))
        )
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            if resp.WhichOneof("msg") != "bundle":
                continue
            b = resp.bundle
            key = f"{b.revision}/{b.digest}"
            if key not in verified:
                verify_envelope(b, trusted)
                verified.add(key)
            await call.write(
                distribution_pb2.SubscribeRequest(
                    ack=distribution_pb2.Ack(revision=b.revision, digest=b.digest)
                )
            )
            acks.setdefault(b.revision, []).append(time.time())
            latest[i] = b.revision

    tasks = [asyncio.create_task(stream(i)) for i in range(n)]
    loop = asyncio.get_running_loop()
    while True:
        cmd, arg = await loop.run_in_executor(None, conn.recv)
        if cmd == "stop":
            break
        deadline = time.monotonic() + 30
        while min(latest) < arg and time.monotonic() < deadline:  # noqa: ASYNC110 - a poll
            await asyncio.sleep(0.005)
        dead = [t for t in tasks if t.done()]
        errors = sorted({repr(t.exception())[:200] for t in dead if not t.cancelled()})
        conn.send((acks.get(arg, []), sum(1 for v in latest if v >= arg), len(dead), errors))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for ch in channels:
        await ch.close()


# -- the distributor under test --------------------------------------------------
def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def _post(url: str, body: Any) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


class Distributor:
    def __init__(self, tmp: Path) -> None:
        from palisade.bundle import generate_key, private_key_pem, public_key_pem

        key = generate_key()
        (tmp / "key.pem").write_bytes(private_key_pem(key))
        self.public_pem = public_key_pem(key)
        self.policies = tmp / "policies"
        self.policies.mkdir()
        (self.policies / "bench.yaml").write_text(POLICY.format(reason="v1"))
        ready = tmp / "ready.json"
        self.log = open(tmp / "distributor.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "palisade.cli.main",
                "distributor",
                "--policy-dir",
                str(self.policies),
                "--store",
                str(tmp / "store.db"),
                "--signing-key",
                str(tmp / "key.pem"),
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--ready-file",
                str(ready),
                "--replica-id",
                "bench",
                "--log-level",
                "WARNING",
                "--heartbeat-grace",
                "600",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("distributor did not start")
            time.sleep(0.05)
        ports = json.loads(ready.read_text())
        self.target = f"127.0.0.1:{ports['grpc_port']}"
        self.url = f"http://127.0.0.1:{ports['http_port']}"
        self.ps = psutil.Process(self.proc.pid)
        self.wait_revision(1)
        (self.policies / "bench.yaml").write_text(POLICY.format(reason="v2"))
        self.wait_revision(2)

    def wait_revision(self, n: int) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            bundles = _get(self.url + "/v1/bundles")["bundles"]
            if bundles and bundles[0]["revision"] >= n:
                return
            time.sleep(0.1)
        raise RuntimeError(f"revision {n} never published")

    def change(self) -> tuple[int, float]:
        """Publish a new revision (a rollback to the one before the latest)."""
        latest = _get(self.url + "/v1/bundles")["bundles"][0]["revision"]
        t0 = time.time()
        body = _post(self.url + "/v1/bundles/rollback", {"to": latest - 1, "by": "bench"})
        return int(body["revision"]["revision"]), t0

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _measure(n: int, rounds: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="bench-distributor-") as tmpdir:
        dist = Distributor(Path(tmpdir))
        workers: list[tuple[Any, Connection]] = []
        problems: list[str] = []
        try:
            time.sleep(0.5)
            rss_before = dist.rss()
            n_proc = max(1, min(8, n // 500))
            sizes = [n // n_proc + (1 if i < n % n_proc else 0) for i in range(n_proc)]
            for i, size in enumerate(sizes):
                parent, child = ctx.Pipe()
                p = ctx.Process(
                    target=_worker, args=(dist.target, f"w{i}", size, dist.public_pem, child)
                )
                p.start()
                workers.append((p, parent))
            for _, conn in workers:  # every stream has the current revision
                conn.send(("wait", 2))
            for _, conn in workers:
                _, _reached, dead, errors = conn.recv()
                if dead or errors:
                    problems.append(f"{dead} streams ended at start: {errors}")
            time.sleep(2.0)  # idle: fleet rows flushed, nothing in flight
            rss_idle = dist.rss()
            latencies: list[float] = []
            acked_min = n
            cpu_used: list[float] = []
            for _ in range(rounds):
                cpu0 = dist.cpu()
                revision, t0 = dist.change()
                for _, conn in workers:
                    conn.send(("wait", revision))
                stamps: list[float] = []
                for _, conn in workers:
                    got, _, dead, errors = conn.recv()
                    stamps.extend(got)
                    if dead or errors:
                        problems.append(f"{dead} streams ended: {errors}")
                cpu_used.append(dist.cpu() - cpu0)
                acked_min = min(acked_min, len(stamps))
                latencies.extend(t - t0 for t in stamps)
                time.sleep(0.5)
        finally:
            for _, conn in workers:
                with contextlib.suppress(OSError):
                    conn.send(("stop", 0))
            for p, _ in workers:
                p.join(30)
                if p.is_alive():
                    p.kill()
            dist.stop()
    ms = [x * 1e3 for x in latencies]
    return {
        "subscribers": f"{n}",
        "acked": acked_min,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "rss_per_sub_kb": (rss_idle - rss_before) / n / 1024 if n > 1 else float("nan"),
        "rss_mb": rss_idle / 2**20,
        "cpu_s_per_push": sum(cpu_used) / len(cpu_used),
        "processes": len(sizes),
        "problems": problems,
    }


def run(quick: bool) -> Report:
    sizes = (1, 100, 1000) if quick else (1, 1000, 5000)
    rounds = 3
    rows = [_measure(n, rounds) for n in sizes]
    base = rows[0]["max_ms"]
    for row in rows:
        row["max_vs_1"] = row["max_ms"] / base if base else float("nan")
    big = str(sizes[-1])
    return Report(
        name="distributor",
        title=f"distributor: bundle change -> last ACK ({rounds} changes each, "
        f"{os.cpu_count()} CPUs shared by distributor and subscribers)",
        columns=[
            "subscribers",
            "acked",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "max_vs_1",
            "rss_per_sub_kb",
            "rss_mb",
            "cpu_s_per_push",
            "processes",
        ],
        rows=rows,
        targets=[
            Target(f"{big} subscribers all ACKed", big, "max_ms", "<=", 2000.0),
            Target("memory per idle subscriber (KB)", big, "rss_per_sub_kb", "<=", 30.0),
        ],
        notes=[
            "change = HTTP rollback (publish + sign per scope + push); file mode adds its "
            "1 s poll and 0.2 s debounce",
            "latency is from the change request to each subscriber's ACK (same host clock)",
        ],
    )
