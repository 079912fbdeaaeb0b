"""Real peers for the fleet tests: a `palisade distributor` process, `palisade sidecar`
processes in front of the example MCP server, the MCP SDK client, the real CLI.

Every process gets random free ports and a temp directory, and is stopped by its
fixture. Nothing between the client, the sidecar, the distributor and the
upstream is stubbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from palisade.bundle.signing import generate_key, private_key_pem, public_key_pem
from tests.harness.peers import free_port, get_json, stop, wait_port

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_SERVER = ROOT / "examples" / "mcp_servers" / "k8s_server.py"
SERVER = "kubernetes-mcp"
TOKEN = "sre-token"

POLICY = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata:
  name: payments
spec:
  defaultDecision: deny
  servers:
    - name: kubernetes-mcp
      versions: ["1.*"]
      tools:
        - {{name: pods_list, risk: read}}
        - {{name: pods_top, risk: read}}
        - {{name: resources_create_or_update, risk: write, secretArguments: [name]}}
        - {{name: resources_delete, risk: destructive}}
  tenants:
    - {{name: payments, namespaces: [payments]}}
  agents:
    - {{id: sre-agent, tenant: payments, namespaces: [payments]}}
  rules:
{extra}    - id: deny-destructive
      match: {{risk: [destructive]}}
      decision: deny
      reason: destructive calls are refused
    - id: allow-reads
      match: {{risk: [read], tenants: [payments]}}
      decision: allow
      reason: reads are allowed for payments
    - id: writes-need-approval
      match: {{risk: [write]}}
      decision: require_approval
      reason: a human approves every write
"""

FREEZE_READS = """\
    - id: freeze-pods-list
      match: {tools: [pods_list]}
      decision: deny
      reason: pods_list is frozen during the incident review
"""


def policy(extra: str = "") -> str:
    return POLICY.format(extra=extra)


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``palisade`` command line, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )


async def acli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args)


async def acli_json(*args: str) -> Any:
    done = await acli(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def eventually(
    predicate: Callable[[], Any], within: float = 20.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def until(
    check: Callable[[], Awaitable[Any]], within: float = 30.0, what: str = "condition"
) -> Any:
    """Await ``check()`` until it gives something truthy (the CLI is a child process per try)."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class Distributor:
    tmp: Path
    policy_dir: Path
    key_path: Path
    grpc_port: int
    approval_window_s: float = 300.0
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = 0
    starts: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, key_path: Path | None = None) -> None:
        """Start (again) on the same gRPC port and store; optionally signing with another key."""
        self.starts += 1
        ready = self.tmp / f"distributor-{self.starts}.ready"
        cmd = [
            sys.executable,
            "-m",
            "palisade.cli.main",
            "distributor",
            "--policy-dir",
            str(self.policy_dir),
            "--signing-key",
            str(key_path or self.key_path),
            "--store",
            str(self.tmp / "distributor.db"),
            "--grpc-listen",
            self.target,
            "--http-listen",
            "127.0.0.1:0",
            "--ready-file",
            str(ready),
            "--debounce",
            "0.1",
            "--poll",
            "0.2",
            "--approval-window",
            str(self.approval_window_s),
            *self.extra,
        ]
        log = (self.tmp / "distributor.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env())
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.tmp / "distributor.log").read_text()[-3000:]
                raise RuntimeError(f"distributor did not start: {tail}")
            time.sleep(0.05)
        self.http_port = json.loads(ready.read_text())["http_port"]

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def write_policy(self, text: str) -> None:
        path = self.policy_dir / "payments.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)

    # the operator's view, through the real CLI
    async def sidecars(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await acli_json("fleet", "sidecars", "--url", self.url)
        return rows

    async def sidecar(self, client_id: str) -> dict[str, Any] | None:
        rows = [r for r in await self.sidecars() if r["id"] == client_id]
        return rows[0] if rows else None

    async def approvals(self, *flags: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await acli_json("approvals", "list", *flags, "--url", self.url)
        return rows

    async def audit(self, *flags: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await acli_json(
            "audit", "query", *flags, "--limit", "100000", "--url", self.url
        )
        return rows


def write_keypair(path: Path) -> Path:
    """A signing key at ``path`` and its public half next to it; returns the public file."""
    key = generate_key()
    path.write_bytes(private_key_pem(key))
    pub = path.with_suffix(".pub.pem")
    pub.write_bytes(public_key_pem(key))
    return pub


@dataclass
class Upstream:
    url: str
    state_dir: Path
    proc: subprocess.Popen[bytes]


@dataclass
class SidecarProc:
    proc: subprocess.Popen[bytes]
    port: int
    client_id: str
    audit_path: Path
    log_path: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def source(self) -> str:
        return f"sidecar/{self.client_id}"

    def readyz(self) -> tuple[int, Any]:
        return get_json(f"http://127.0.0.1:{self.port}/readyz")

    def metric(self, name: str) -> float:
        """One unlabelled sample from ``/metrics``."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"{name} not in /metrics")

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


def _launch(args: list[str], e: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "palisade.cli.main", "sidecar", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=e,
        )


@dataclass
class World:
    tmp: Path
    distributor: Distributor
    upstream: Upstream
    trusted_pub: Path
    sidecars: list[SidecarProc] = field(default_factory=list)

    def start_sidecar(
        self, name: str = "sc-1", *extra: str, via_env: bool = False, heartbeat: float = 0.3
    ) -> SidecarProc:
        port = free_port()
        home = self.tmp / name
        home.mkdir(exist_ok=True)
        client_id = f"payments/{name}"
        args = [
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            self.upstream.url,
            "--server-name",
            SERVER,
            "--state-dir",
            str(home / "state"),
            "--audit-dir",
            str(home / "audit"),
            "--dev-auth",
            "--dev-token",
            f"{TOKEN}=sre-agent:payments",
            "--heartbeat-interval",
            str(heartbeat),
            "--shutdown-grace",
            "3",
            "--log-level",
            "info",
            *extra,
        ]
        e = env()
        # the downward-API variables the injector sets in a pod
        e.update(
            PALISADE_POD_NAME=name,
            PALISADE_POD_NAMESPACE="payments",
            PALISADE_POD_UID=client_id,
            PALISADE_NODE_NAME="node-1",
            PALISADE_TENANT="payments",
        )
        if via_env:  # as a pod could carry them: the address, and the public key inline
            e["PALISADE_DISTRIBUTOR"] = self.distributor.target
            e["PALISADE_TRUSTED_KEY"] = self.trusted_pub.read_text()
        else:
            args += [
                "--distributor",
                self.distributor.target,
                "--trusted-key",
                str(self.trusted_pub),
            ]
        log_path = home / "sidecar.log"
        proc = _launch(args, e, log_path)
        wait_port(port, proc)
        sc = SidecarProc(proc, port, client_id, home / "audit" / "audit.jsonl", log_path, args, e)
        self.sidecars.append(sc)
        return sc

    def restart_sidecar(self, sc: SidecarProc) -> None:
        """Stop ``sc`` and start it again as a pod's container restarts: same port, same
        volumes (state dir, audit dir), same identity."""
        stop(sc.proc)
        sc.proc = _launch(sc.args, sc.env, sc.log_path)
        wait_port(sc.port, sc.proc)

    async def ready(self, sc: SidecarProc, revision: int, within: float = 20.0) -> Any:
        def check() -> Any:
            status, doc = sc.readyz()
            return doc if status == 200 and doc.get("bundle_revision") == revision else None

        return await eventually(check, within, f"{sc.client_id} ready on revision {revision}")

    def close(self) -> None:
        for sc in self.sidecars:
            stop(sc.proc)
        self.distributor.stop()
        stop(self.upstream.proc)


def start_upstream(tmp: Path) -> Upstream:
    port = free_port()
    state = tmp / "upstream-state"
    state.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE_SERVER), "--port", str(port), "--state-dir", str(state)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port, proc)
    return Upstream(f"http://127.0.0.1:{port}", state, proc)


def make_world(
    tmp: Path, approval_window_s: float = 300.0, extra: list[str] | None = None
) -> World:
    policy_dir = tmp / "policies"
    policy_dir.mkdir()
    (policy_dir / "payments.yaml").write_text(policy())
    key = tmp / "signing.pem"
    pub = write_keypair(key)
    dist = Distributor(
        tmp, policy_dir, key, free_port(), approval_window_s=approval_window_s, extra=extra or []
    )
    upstream = start_upstream(tmp)
    world = World(tmp, dist, upstream, pub)
    try:
        dist.start()
    except Exception:
        world.close()
        raise
    return world


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, extra=["--insecure-approvers"])  # approvers as --by says
    try:
        yield w
    finally:
        w.close()


@contextlib.asynccontextmanager
async def mcp_client(url: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as c,
    ):
        yield c
