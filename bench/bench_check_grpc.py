"""gRPC ``PolicyService/Check`` over a Unix socket: latency at concurrency 1, throughput at 32.

The server is the real ``palisade check-server`` (real engine on the example
bundle with its rate limit and spend cap lifted, so calls are decided by the
rules and the mutation cap; real signed audit log with interval fsync;
metrics) in its own process pinned to one core with
``os.sched_setaffinity``, so its RSS and CPU are its own; the client runs
in this process on the other cores. Concurrency 1 uses the
synchronous gRPC client (one call in flight, latency per call);
concurrency 32 runs 32 asyncio callers over one channel.
The baseline row is the health service's Check on the same socket: the cost
of a gRPC round trip with no policy work, measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import psutil
import yaml

from bench.common import Report, Target, rss_mb, summarize_us
from palisade.audit import Signer
from palisade.v1 import policy_pb2, policy_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "payments-bundle.yaml"


def _bench_bundle(tmp: Path) -> Path:
    """The example bundle with its rate limit and spend cap lifted: one agent calling
    thousands of times a second would otherwise be throttled on nearly every call,
    and the benchmark would measure only the refusal path."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    budgets = doc["spec"].get("budgets", {})
    for limit in budgets.get("rateLimits", []):
        limit["rate"] = limit["burst"] = 1e9
    for cap in budgets.get("spendCaps", []):
        cap["limit"] = 1e15
    out = tmp / "bench-bundle.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _requests() -> list[policy_pb2.CheckRequest]:
    out = []
    calls = [
        ("pods_log", {"namespace": "payments", "name": "payments-api-7d9f", "tailLines": 200}),
        ("pods_list", {"namespace": "payments"}),
        ("resources_create_or_update", {"namespace": "payments", "kind": "ConfigMap"}),
        ("resources_delete", {"namespace": "payments", "kind": "Deployment"}),
    ]
    for i in range(64):
        tool, args = calls[i % len(calls)]
        r = policy_pb2.CheckRequest(
            agent="sre-agent-payments",
            server="kubernetes-mcp",
            server_version="1.4.0",
            tool=tool,
            session=f"bench-{i}",
            request_id=f"bench-{i}",
        )
        r.arguments.update(args)
        out.append(r)
    return out


def _start_server(tmp: Path, core: int) -> tuple[subprocess.Popen[bytes], str]:
    bundle = _bench_bundle(tmp)
    key = tmp / "audit.pem"
    key.write_bytes(Signer.generate().private_pem())
    sock = str(tmp / "check.sock")
    cmd = [
        sys.executable, "-m", "palisade.cli.main", "check-server",
        "--bundle", str(bundle), "--socket", sock,
        "--audit-file", str(tmp / "audit.jsonl"), "--audit-key", str(key),
        "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT)
    os.sched_setaffinity(proc.pid, {core})  # pinned from the parent: no preexec_fn
    deadline = time.monotonic() + 20
    while not os.path.exists(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("check server did not start")
        time.sleep(0.05)
    return proc, sock


def _latency(sock: str, n: int) -> tuple[list[float], list[float]]:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    reqs = _requests()
    with grpc.insecure_channel(f"unix:{sock}") as ch:
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        health = health_pb2_grpc.HealthStub(ch)
        hreq = health_pb2.HealthCheckRequest(service="")
        for i in range(300):
            stub.Check(reqs[i % len(reqs)])
            health.Check(hreq)
        check, base = [], []
        for i in range(n):
            t0 = time.perf_counter()
            stub.Check(reqs[i % len(reqs)])
            t1 = time.perf_counter()
            health.Check(hreq)
            t2 = time.perf_counter()
            check.append(t1 - t0)
            base.append(t2 - t1)
    return check, base


async def _throughput(sock: str, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    reqs = _requests()
    async with grpc.aio.insecure_channel(f"unix:{sock}") as ch:
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        for r in reqs:
            await stub.Check(r)
        samples: list[float] = []
        stop_at = time.perf_counter() + seconds
        count = 0

        async def worker(k: int) -> None:
            nonlocal count
            i = k
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await stub.Check(reqs[i % len(reqs)])
                samples.append(time.perf_counter() - t0)
                i += concurrency
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return count / elapsed, samples


def _audit_summary(tmp: Path) -> str:
    """What the server decided and wrote, from its audit log (every record is one Check)."""
    decisions: Counter[str] = Counter()
    records = signed = 0
    for path in tmp.glob("audit.jsonl*"):
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            decisions[rec["decision"]] += 1
            records += 1
            signed += bool(rec["signature"])
    mix = ", ".join(f"{k} {v / max(1, records):.0%}" for k, v in decisions.most_common())
    return (
        f"audit: {records:,} records ({mix}); {signed:,} signatures, "
        f"{records / max(1, signed):.1f} records per group commit on average"
    )


def run(quick: bool) -> Report:
    n = 2000 if quick else 20000
    seconds = 2.0 if quick else 8.0
    cores = sorted(os.sched_getaffinity(0))
    server_core = cores[-1]
    client_cores = set(cores[:-1]) or {server_core}
    os.sched_setaffinity(0, client_cores)
    report = Report(
        name="check_grpc",
        title="gRPC PolicyService/Check over a Unix socket (server pinned to one core)",
        columns=["case", "p50_us", "p99_us", "checks_per_s", "server_rss_mb", "server_cpu_s"],
    )
    with tempfile.TemporaryDirectory(prefix="pal-bench-", dir="/tmp") as tmp:
        proc, sock = _start_server(Path(tmp), server_core)
        try:
            ps = psutil.Process(proc.pid)
            cpu0 = sum(ps.cpu_times()[:2])
            check, base = _latency(sock, n)
            cpu1 = sum(ps.cpu_times()[:2])
            c1 = summarize_us(check)
            report.rows.append(
                {
                    "case": "baseline: health Check, c=1",
                    **summarize_us(base),
                    "checks_per_s": 1 / (sum(base) / len(base)),
                    "server_rss_mb": rss_mb(proc.pid),
                }
            )
            report.rows.append(
                {
                    "case": "Check, concurrency 1",
                    **c1,
                    "checks_per_s": 1 / (sum(check) / len(check)),
                    "server_rss_mb": rss_mb(proc.pid),
                    "server_cpu_s": cpu1 - cpu0,
                }
            )
            rate, samples = asyncio.run(_throughput(sock, 32, seconds))
            cpu2 = sum(ps.cpu_times()[:2])
            report.rows.append(
                {
                    "case": "Check, concurrency 32",
                    **summarize_us(samples),
                    "checks_per_s": rate,
                    "server_rss_mb": rss_mb(proc.pid),
                    "server_cpu_s": cpu2 - cpu1,
                }
            )
            server_us = (cpu2 - cpu1) / max(1, len(samples)) * 1e6
            report.notes.append(
                f"server CPU per check at c=32: {server_us:.0f} us "
                f"(one core could serve ~{1e6 / server_us:,.0f} checks/s)"
            )
            report.notes.append(
                f"Check p50 minus health-check p50 at c=1: "
                f"{c1['p50_us'] - summarize_us(base)['p50_us']:.0f} us of policy, audit and metrics"
            )
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            os.sched_setaffinity(0, set(cores))
        report.notes.append(_audit_summary(Path(tmp)))
    report.notes.append(
        f"machine: {os.cpu_count()} CPUs shared with other work; client on cores "
        f"{sorted(client_cores)}, server on core {server_core}; audit fsync=interval"
    )
    report.targets = [
        Target("p50 <= 250 us at c=1", "Check, concurrency 1", "p50_us", "<=", 250),
        Target("p99 <= 1 ms at c=1", "Check, concurrency 1", "p99_us", "<=", 1000),
        Target(
            ">= 4,000 checks/s on one core", "Check, concurrency 32", "checks_per_s", ">=", 4000
        ),
    ]
    return report
