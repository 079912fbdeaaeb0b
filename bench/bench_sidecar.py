"""The sidecar's cost: the same MCP load direct to the upstream and through the sidecar.

Three real processes, started here and measured in the same run:

- the upstream: an MCP server built with the MCP Python SDK (``MCPServer``,
  Streamable HTTP, JSON responses) with two tools, ``small`` (a few bytes) and
  ``big`` (a 64 KiB text result), pinned to its own core where the machine has one;
- ``palisade sidecar`` in front of it with a real bundle, real JWT verification
  (Ed25519 keys served by a small issuer in this process), and the signed audit
  log on, pinned to its own core;
- the load generator (this process): an aiohttp client sending raw JSON-RPC
  ``tools/call`` POSTs after ``initialize``, one session per worker, keep-alive.

Rows: ``<target> <size> c=<n>``. At concurrency 1, latency per call (p50/p99);
at 64, throughput over a fixed number of calls. Added latency and the
throughput ratio are computed against the direct row of the same size, and the
sidecar's peak RSS is sampled during its load.

Run: ``python -m bench sidecar`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psutil
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from bench.common import Report, Target, summarize_us

ROOT = Path(__file__).resolve().parent.parent
BIG_BYTES = 64 * 1024
SERVER_NAME = "bench-upstream"
AGENT_SUBJECT = "bench-agent"
PROTOCOL = "2025-06-18"
ACCEPT = "application/json, text/event-stream"

BUNDLE = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: bench
spec:
  defaultDecision: deny
  servers:
    - name: {server}
      versions: ["*"]
      tools:
        - {{name: small, risk: read}}
        - {{name: big, risk: read}}
  tenants:
    - name: bench
      namespaces: [bench]
  agents:
    - id: bench-agent
      tenant: bench
      identities:
        - {{issuer: "{issuer}", subject: {subject}}}
  rules:
    - id: allow-reads
      match: {{risk: [read]}}
      decision: allow
      reason: reads are allowed
"""


# --- the upstream (run as a child: python -m bench.bench_sidecar --serve-upstream PORT) ---


def serve_upstream(port: int, version: str) -> None:
    from mcp.server.mcpserver import MCPServer

    mcp: MCPServer[Any] = MCPServer(name=SERVER_NAME, version=version)
    blob = "x" * BIG_BYTES

    @mcp.tool()
    def small() -> str:
        """A tiny result."""
        return "ok"

    @mcp.tool()
    def big() -> str:
        """A 64 KiB text result."""
        return blob

    asyncio.run(
        mcp.run_streamable_http_async(
            host="127.0.0.1", port=port, json_response=True, session_idle_timeout=None
        )
    )


# --- helpers ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Placement:
    """Which cores the upstream, the sidecar and the load generator (this process) run on."""

    upstream: int | None
    sidecar: int | None
    client: frozenset[int]
    description: str


def placement(cores: list[int]) -> Placement:
    """Pin the three processes so the ratio measures the proxy, not a scheduler fight.

    The target assumes what a pod gives: the sidecar container has CPU of its own,
    beside the MCP server's. Three or more cores: one each for upstream and sidecar,
    the rest for the client. Two: the sidecar gets a core of its own, and upstream
    and client share the other *in the direct and the sidecar runs alike*, so the
    only difference between the two runs is the sidecar in the path; the direct
    figure is then the pair on one core, not the best this machine could do
    direct. (Measured alternatives on 2 cores, same code: unpinned, three busy
    processes share both cores and the ratio tends to (up + client) / (up + client
    + sidecar) CPU per call, ~0.75; sidecar sharing the client's core, the sidecar
    waits on the load generator's time slices, ~0.6.) One core: nothing to pin.
    """
    if len(cores) >= 3:
        rest = frozenset(cores[2:])
        return Placement(
            cores[0],
            cores[1],
            rest,
            f"upstream on core {cores[0]}, sidecar on core {cores[1]}, client on {sorted(rest)}",
        )
    if len(cores) == 2:
        return Placement(
            cores[0],
            cores[1],
            frozenset({cores[0]}),
            f"2 cores: sidecar alone on core {cores[1]}; upstream and client share core "
            f"{cores[0]} in direct and sidecar runs alike",
        )
    return Placement(None, None, frozenset(cores), "1 core shared by upstream, sidecar, client")


def _set_affinity(pid: int, cores: set[int]) -> None:
    """Move every thread of ``pid`` (worker threads too) onto ``cores``."""
    for thread in psutil.Process(pid).threads():
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(thread.id, cores)


def _pinned(where: Placement, up_pid: int, sc_pid: int, cores: list[int], on: bool) -> None:
    """Pin the three processes as ``where`` says (``on``), or let them use every core.

    Latency at c=1 is measured unpinned: only one process is busy at a time, so
    there is nothing to keep apart, and a process pinned to a core of its own finds
    it idle between calls; waking an idle vCPU costs milliseconds on a VM (p99
    through the sidecar 5-7 ms pinned, 1.4-1.7 ms unpinned on the 2-core machine).
    """
    every = set(cores)
    for pid, core in ((up_pid, where.upstream), (sc_pid, where.sidecar)):
        _set_affinity(pid, {core} if on and core is not None else every)
    _set_affinity(os.getpid(), set(where.client) if on else every)


def _wait(
    url: str, proc: subprocess.Popen[bytes], log: Path | None = None, timeout: float = 60.0
) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def _process(argv: list[str], log: Path, core: int | None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        if core is not None:  # pinned from the parent: no preexec_fn in a threaded process
            os.sched_setaffinity(proc.pid, {core})
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Issuer:
    """Discovery and JWKS for one Ed25519 key, served from this process."""

    def __init__(self) -> None:
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        jwk = json.loads(OKPAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid="bench", alg="EdDSA", use="sig")
        app = web.Application()
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"

        async def meta(_: web.Request) -> web.Response:
            return web.json_response({"issuer": self.url, "jwks_uri": self.url + "/keys"})

        async def keys(_: web.Request) -> web.Response:
            return web.json_response({"keys": [jwk]})

        app.router.add_get("/.well-known/oauth-authorization-server", meta)
        app.router.add_get("/keys", keys)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def token(self, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": AGENT_SUBJECT,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "bench"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# --- the load generator ----------------------------------------------------


class Client:
    """One MCP session over one keep-alive connection, raw JSON-RPC."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.http = http
        self.url = url
        self.headers = {"Content-Type": "application/json", "Accept": ACCEPT}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.next_id = 0

    async def _post(self, doc: dict[str, Any]) -> bytes:
        async with self.http.post(self.url, data=json.dumps(doc), headers=self.headers) as r:
            body = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"HTTP {r.status}: {body[:300]!r}")
            sid = r.headers.get("Mcp-Session-Id")
            if sid:
                self.headers["Mcp-Session-Id"] = sid
            return body

    async def initialize(self) -> None:
        await self._post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"},
                },
            }
        )
        self.headers["MCP-Protocol-Version"] = PROTOCOL
        await self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def call(self, tool: str) -> bool:
        """One tools/call; False when the answer is not a complete, successful result."""
        self.next_id += 1
        body = await self._post(
            {
                "jsonrpc": "2.0",
                "id": self.next_id,
                "method": "tools/call",
                "params": {"name": tool, "arguments": {}},
            }
        )
        try:
            doc = json.loads(body)
        except ValueError:
            return False  # e.g. a truncated body
        return "result" in doc and not doc["result"].get("isError")

    async def close(self) -> None:
        pass  # the connection belongs to the shared aiohttp session


class SdkClient:
    """One session of the official MCP Python SDK client (``mcp.Client``, its default
    ``auto`` mode: discovery, then the newest revision both sides speak), with its own
    httpx connection pool, as one agent process would have."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None

    async def initialize(self) -> None:
        from mcp import Client as McpClient
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        http = await self._stack.enter_async_context(create_mcp_http_client(headers=headers))
        self._client = await self._stack.enter_async_context(
            McpClient(streamable_http_client(self.url, http_client=http))
        )

    async def call(self, tool: str) -> bool:
        try:
            result = await self._client.call_tool(tool, {})
        except Exception:
            return False
        return not result.is_error and bool(result.content)

    async def close(self) -> None:
        await self._stack.aclose()


AnyClient = Client | SdkClient
CLIENTS = ("raw", "sdk")


@contextlib.asynccontextmanager
async def _sessions(
    kind: str, url: str, token: str | None, n: int
) -> AsyncIterator[list[AnyClient]]:
    """``n`` initialized sessions of the ``kind`` of client, closed afterwards."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
    clients: list[AnyClient] = [
        Client(http, url, token) if kind == "raw" else SdkClient(url, token) for _ in range(n)
    ]
    try:
        for c in clients:
            await c.initialize()
        yield clients
    finally:
        # in reverse: each SDK client holds an anyio task group, and a task must leave
        # its cancel scopes in the reverse order it entered them
        for c in reversed(clients):
            await c.close()
        await http.close()


async def _latency(
    kind: str, url: str, token: str | None, tool: str, n: int, warm: int
) -> tuple[list[float], int]:
    """Per-call latencies of ``n`` sequential calls, and how many answers were bad."""
    async with _sessions(kind, url, token, 1) as (client,):
        for _ in range(warm):
            await client.call(tool)
        samples = []
        bad = 0
        for _ in range(n):
            t0 = time.perf_counter()
            ok = await client.call(tool)
            samples.append(time.perf_counter() - t0)
            bad += not ok
        return samples, bad


@dataclass
class Load:
    """What one concurrent run measured."""

    rate: float
    latencies: list[float]
    peak_rss_mb: float
    bad: int
    #: CPU seconds each watched process spent during the measured calls.
    cpu_s: dict[str, float]


def _cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


async def _throughput(
    kind: str,
    url: str,
    token: str | None,
    tool: str,
    concurrency: int,
    total: int,
    watch_rss: int | None,
    cpu_of: dict[str, int],
) -> Load:
    """``total`` calls from ``concurrency`` sessions at once."""
    async with _sessions(kind, url, token, concurrency) as clients:
        return await _load(clients, tool, total, watch_rss, cpu_of)


async def _load(
    clients: list[AnyClient],
    tool: str,
    total: int,
    watch_rss: int | None,
    cpu_of: dict[str, int],
) -> Load:
    concurrency = len(clients)
    peak = 0.0
    running = True

    async def sample() -> None:
        nonlocal peak
        proc = psutil.Process(watch_rss) if watch_rss else None
        while running and proc is not None:
            peak = max(peak, proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.05)

    remaining = concurrency * 4  # warm-up: every session a few calls
    latencies: list[float] = []
    bad = 0

    async def worker(c: AnyClient) -> None:
        nonlocal remaining, bad
        while remaining > 0:
            remaining -= 1
            t0 = time.perf_counter()
            ok = await c.call(tool)
            latencies.append(time.perf_counter() - t0)
            bad += not ok

    await asyncio.gather(*(worker(c) for c in clients))
    remaining = total
    latencies.clear()
    bad = 0
    sampler = asyncio.create_task(sample())
    cpu0 = {name: _cpu(pid) for name, pid in cpu_of.items()}
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - t0
    cpu = {name: _cpu(pid) - cpu0[name] for name, pid in cpu_of.items()}
    running = False
    await sampler
    return Load(total / elapsed, latencies, peak, bad, cpu)


# --- the run ---------------------------------------------------------------


async def _measure(quick: bool) -> Report:
    n_lat, warm = (300, 50) if quick else (3000, 100)
    total = 2000 if quick else 12000
    rounds = 1 if quick else 5
    cores = _cores()
    where = placement(cores)
    _set_affinity(os.getpid(), set(where.client))
    try:
        return await _measure_pinned(quick, where, cores, n_lat, warm, total, rounds)
    finally:
        _set_affinity(os.getpid(), set(cores))  # later benchmarks in this process get them back


@dataclass
class Pair:
    """An upstream and the sidecar in front of it (processes and URLs)."""

    up: subprocess.Popen[bytes]
    sc: subprocess.Popen[bytes]
    direct_url: str
    sidecar_url: str


def _argv(
    up_port: int, sc_port: int, tmp: Path, issuer: str, version: str
) -> tuple[list[str], list[str]]:
    bundle = tmp / "bundle.yaml"
    bundle.write_text(BUNDLE.format(server=SERVER_NAME, issuer=issuer, subject=AGENT_SUBJECT))
    upstream = [
        sys.executable, "-m", "bench.bench_sidecar",
        "--serve-upstream", str(up_port), "--version", version,
    ]  # fmt: skip
    sidecar = [
        sys.executable, "-m", "palisade.cli.main", "sidecar",
        "--listen", f"127.0.0.1:{sc_port}",
        "--upstream", f"http://127.0.0.1:{up_port}",
        "--server-name", SERVER_NAME,
        "--bundle", str(bundle), "--allow-unsigned-bundles",
        "--state-dir", str(tmp / "state"),
        "--audit-dir", str(tmp / "audit"),
        "--resource", f"http://127.0.0.1:{sc_port}/mcp",
        "--issuer", issuer,
        "--log-level", "warning",
    ]  # fmt: skip
    return upstream, sidecar


@contextlib.asynccontextmanager
async def _pair(tmp: Path, issuer: str, version: str, where: Placement) -> AsyncIterator[Pair]:
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    up_port, sc_port = _free_port(), _free_port()
    up_argv, sc_argv = _argv(up_port, sc_port, tmp, issuer, version)
    with (
        _process(up_argv, tmp / "upstream.log", where.upstream) as up,
        _process(sc_argv, tmp / "sidecar.log", where.sidecar) as sc,
    ):
        await asyncio.to_thread(_wait, f"http://127.0.0.1:{up_port}/", up, tmp / "upstream.log")
        await asyncio.to_thread(
            _wait, f"http://127.0.0.1:{sc_port}/readyz", sc, tmp / "sidecar.log"
        )
        yield Pair(up, sc, f"http://127.0.0.1:{up_port}/mcp", f"http://127.0.0.1:{sc_port}/mcp")


@dataclass
class Tally:
    """What the rounds of one row measured, summed."""

    lat: list[float] = field(default_factory=list)
    lat64: list[float] = field(default_factory=list)
    bad1: int = 0
    bad64: int = 0
    busy: float = 0.0
    rates: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(
        default_factory=lambda: {"upstream": 0.0, "sidecar": 0.0, "client": 0.0}
    )
    peak: float = 0.0


async def _round(
    t: Tally,
    kind: str,
    url: str,
    token: str | None,
    tool: str,
    n: int,
    warm: int,
    total: int,
    pair: Pair,
    where: Placement,
    cores: list[int],
    watch: bool,
) -> None:
    _pinned(where, pair.up.pid, pair.sc.pid, cores, on=False)
    samples, bad = await _latency(kind, url, token, tool, n, warm)
    _pinned(where, pair.up.pid, pair.sc.pid, cores, on=True)
    t.lat += samples
    t.bad1 += bad
    pids = {"upstream": pair.up.pid, "sidecar": pair.sc.pid, "client": os.getpid()}
    load = await _throughput(
        kind, url, token, tool, 64, total, pair.sc.pid if watch else None, pids
    )
    t.lat64 += load.latencies
    t.bad64 += load.bad
    t.busy += total / load.rate
    t.rates.append(load.rate)
    t.peak = max(t.peak, load.peak_rss_mb)
    for name, spent in load.cpu_s.items():
        t.cpu[name] += spent


def _rows(name: str, t: Tally, calls: int, sidecar: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    row1 = {"case": f"{name} c=1", **summarize_us(t.lat), "bad": t.bad1}
    row1["calls_s"] = len(t.lat) / sum(t.lat)
    row64 = {"case": f"{name} c=64", **summarize_us(t.lat64), "bad": t.bad64}
    row64["calls_s"] = calls / t.busy
    row64["up_cpu_us"] = t.cpu["upstream"] / calls * 1e6
    row64["cl_cpu_us"] = t.cpu["client"] / calls * 1e6
    if sidecar:
        row64["sc_cpu_us"] = t.cpu["sidecar"] / calls * 1e6
        row64["rss_mb"] = t.peak
    return row1, row64


def _compare(
    base: tuple[dict[str, Any], dict[str, Any]],
    this: tuple[dict[str, Any], dict[str, Any]],
    base_rates: list[float],
    rates: list[float],
) -> None:
    (b1, b64), (s1, s64) = base, this
    s1["added_p50_us"] = s1["p50_us"] - b1["p50_us"]
    s1["added_p99_us"] = s1["p99_us"] - b1["p99_us"]
    s64["ratio"] = s64["calls_s"] / b64["calls_s"]
    s64["ratio_med"] = statistics.median(r / b for r, b in zip(rates, base_rates, strict=True))


async def _measure_pinned(
    quick: bool,
    where: Placement,
    cores: list[int],
    n_lat: int,
    warm: int,
    total: int,
    rounds: int,
) -> Report:
    issuer = _Issuer()
    await issuer.start()
    rows: list[dict[str, Any]] = []
    per = total // rounds
    calls = rounds * per
    with tempfile.TemporaryDirectory(prefix="bench-sidecar-") as tmpdir:
        tmp = Path(tmpdir)
        async with (
            _pair(tmp / "versioned", issuer.url, "1.0.0", where) as pair,
            _pair(tmp / "unversioned", issuer.url, "", where) as bare,
        ):
            idle_rss = psutil.Process(pair.sc.pid).memory_info().rss / 2**20
            token = issuer.token(pair.sidecar_url)
            bare_token = issuer.token(bare.sidecar_url)
            for kind in CLIENTS:
                for size, tool in (("small", "small"), ("64KiB", "big")):
                    # Rounds alternate direct and sidecar so drift in the machine's load
                    # (shared cores) falls on both alike.
                    d, s = Tally(), Tally()
                    for _ in range(rounds):
                        args = (n_lat // rounds, warm, per, pair, where, cores)
                        await _round(d, kind, pair.direct_url, None, tool, *args, watch=False)
                        await _round(s, kind, pair.sidecar_url, token, tool, *args, watch=True)
                    dr = _rows(f"direct {kind} {size}", d, calls, sidecar=False)
                    sr = _rows(f"sidecar {kind} {size}", s, calls, sidecar=True)
                    _compare(dr, sr, d.rates, s.rates)
                    rows += [dr[0], sr[0], dr[1], sr[1]]
            # The upstream that reports an empty serverInfo.version (the SDK's default),
            # interleaved with the versioned one: the sidecar must not ask it per call.
            v, e = Tally(), Tally()
            n = n_lat // rounds
            for _ in range(rounds):
                for t, p, tok in ((v, pair, token), (e, bare, bare_token)):
                    await _round(
                        t, "raw", p.sidecar_url, tok, "small", n, warm, per, p, where, cores, True
                    )
            vr = _rows("sidecar raw small (versioned)", v, calls, sidecar=True)
            er = _rows("sidecar raw small (empty version)", e, calls, sidecar=True)
            er[0]["vs_versioned"] = er[0]["p50_us"] / vr[0]["p50_us"]
            er[1]["vs_versioned"] = er[1]["calls_s"] / vr[1]["calls_s"]
            rows += [vr[0], er[0], vr[1], er[1]]
            audit = tmp / "versioned" / "audit" / "audit.jsonl"
            lines = audit.read_text().splitlines() if audit.exists() else []
            audited = len(lines)
            signed = sum(1 for line in lines if '"signature":""' not in line)
    await issuer.stop()
    return _report(rows, n_lat, total, rounds, where, idle_rss, audited, signed)


def _report(
    rows: list[dict[str, Any]],
    n_lat: int,
    total: int,
    rounds: int,
    where: Placement,
    idle_rss: float,
    audited: int,
    signed: int,
) -> Report:
    report = Report(
        name="sidecar",
        title="MCP tools/call direct vs through palisade sidecar (JWT auth, policy, signed audit)",
        columns=[
            "case",
            "p50_us",
            "p99_us",
            "calls_s",
            "added_p50_us",
            "added_p99_us",
            "ratio",
            "ratio_med",
            "vs_versioned",
            "rss_mb",
            "up_cpu_us",
            "sc_cpu_us",
            "cl_cpu_us",
            "bad",
        ],
        rows=rows,
    )
    limits = {"raw": (250, 600), "sdk": (500, 1500)}
    for kind, (p50, p99) in limits.items():
        for size in ("small", "64KiB"):
            c1, c64 = f"sidecar {kind} {size} c=1", f"sidecar {kind} {size} c=64"
            report.targets += [
                Target(f"added p50 <= {p50} us ({kind} {size})", c1, "added_p50_us", "<=", p50),
                Target(f"added p99 <= {p99} us ({kind} {size})", c1, "added_p99_us", "<=", p99),
                Target(f"throughput >= 90% of direct ({kind} {size})", c64, "ratio", ">=", 0.9),
                Target(f"sidecar RSS <= 80 MB ({kind} {size})", c64, "rss_mb", "<=", 80),
            ]
    report.targets += [
        Target("sidecar CPU <= 300 us per call (raw small)", "sidecar raw small c=64",
               "sc_cpu_us", "<=", 300),
        Target("empty version: p50 within 10% of versioned",
               "sidecar raw small (empty version) c=1", "vs_versioned", "<=", 1.1),
        Target("empty version: throughput within 10% of versioned",
               "sidecar raw small (empty version) c=64", "vs_versioned", ">=", 0.9),
    ]  # fmt: skip
    by_case = {r["case"]: r for r in rows}
    projected = []
    for kind in CLIENTS:
        for size in ("small", "64KiB"):
            up_cpu = by_case[f"direct {kind} {size} c=64"].get("up_cpu_us", float("nan"))
            sc_cpu = by_case[f"sidecar {kind} {size} c=64"].get("sc_cpu_us", float("nan"))
            projected.append(f"{kind} {size} {min(1.0, up_cpu / sc_cpu):.2f}")
    report.notes.append(
        "throughput ratio projected for a core per process, min(1, up_cpu_us / sc_cpu_us): "
        + ", ".join(projected)
    )
    bad_rows = [r["case"] for r in rows if r.get("bad")]
    if bad_rows:
        report.notes.append(
            "BAD ANSWERS (not a complete tools/call result) in: " + ", ".join(bad_rows)
        )
    report.notes.append(
        "raw: aiohttp sending JSON-RPC POSTs after initialize; sdk: the official MCP Python "
        "SDK client (mcp.Client, default mode: discovery and the newest revision), one httpx "
        "pool per session. up_cpu_us / sc_cpu_us / cl_cpu_us: CPU time the upstream / the "
        "sidecar / the load generator spent per call under the c=64 load (user+system), a "
        "figure that shared cores do not distort much; ratio: sidecar calls/s over direct "
        "calls/s at c=64 over all rounds; ratio_med: the median of the rounds' ratios; "
        "vs_versioned: the empty-version upstream's p50 (c=1) or calls/s (c=64) over the "
        "versioned one's, both through a sidecar, interleaved; rss_mb: the sidecar's peak RSS"
    )
    report.notes += [
        f"{n_lat} sequential calls at c=1 and {total} calls at c=64 over 64 sessions per row, "
        f"in {rounds} round(s) alternating direct and sidecar",
        "c=64: " + where.description + "; c=1: unpinned (see placement() and _pinned())",
        f"sidecar idle RSS {idle_rss:.1f} MB; {audited} audit records written in {signed} "
        f"signed group commits ({audited / max(1, signed):.1f} records per signature)",
        "upstream: MCP Python SDK MCPServer, Streamable HTTP, JSON responses; "
        "sidecar: real bundle, Ed25519 JWT per request, signed hash-chained audit",
    ]
    return report


def run(quick: bool) -> Report:
    return asyncio.run(_measure(quick))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve-upstream", type=int, required=True)
    parser.add_argument("--version", default="1.0.0", help="serverInfo.version ('' for none)")
    args = parser.parse_args()
    serve_upstream(args.serve_upstream, args.version)
