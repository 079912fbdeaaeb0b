"""Real distributor replicas as child processes, and real clients in the test's loop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from palisade.bundle import private_key_pem
from palisade.distribution import (
    ActiveBundle,
    Backoff,
    ClientSettings,
    DistributionClient,
    TrustedKeys,
)
from palisade.v1 import distribution_pb2
from tests.harness.process import dying_with_parent

ROOT = Path(__file__).resolve().parents[2]

BUNDLE = """\
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
        - {{name: pods_log, risk: read}}
        - {{name: resources_delete, risk: destructive}}
    - name: github-mcp
      tools:
        - {{name: create_issue, risk: write}}
  tenants:
    - name: payments
      namespaces: [payments]
      gpuQuota: {{gpus: {gpus}, enforcement: report}}
  agents:
    - {{id: sre-agent-payments, tenant: payments}}
  rules:
    - id: allow-reads
      match: {{servers: [kubernetes-mcp], risk: [read]}}
      decision: allow
      reason: "{reason}"
    - id: issues
      match: {{servers: [github-mcp]}}
      decision: require_approval
"""


def bundle_yaml(reason: str = "reads are fine", gpus: int = 2) -> str:
    return BUNDLE.format(reason=reason, gpus=gpus)


def write_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.write_bytes(private_key_pem(key))
    return key


@dataclass
class Replica:
    name: str
    proc: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Launched:
    """A replica process started but perhaps not serving yet (see :func:`wait_ready`)."""

    name: str
    proc: subprocess.Popen[bytes]
    ready: Path
    log_path: Path


def launch_replica(
    tmp: Path,
    name: str,
    *,
    policy_dir: Path | None,
    store: Path,
    keys: list[Path],
    extra: list[str] | None = None,
    grpc_port: int = 0,
    env: dict[str, str] | None = None,
) -> Launched:
    """Start a replica process without waiting for it (from the test's own thread: the
    child dies with the thread that started it)."""
    ready = tmp / f"{name}.ready"
    ready.unlink(missing_ok=True)
    log_path = tmp / f"{name}.log"
    cmd = [
        sys.executable,
        "-m",
        "palisade.cli.main",
        "distributor",
        "--store",
        str(store),
        "--replica-id",
        name,
        "--grpc-listen",
        f"127.0.0.1:{grpc_port}",
        "--http-listen",
        "127.0.0.1:0",
        "--ready-file",
        str(ready),
        "--debounce",
        "0.1",
        "--poll",
        "0.2",
        "--heartbeat-grace",
        "2",
        "--gone-after",
        "30",
    ]
    if policy_dir is not None:
        cmd += ["--policy-dir", str(policy_dir)]
    for k in keys:
        cmd += ["--signing-key", str(k)]
    cmd += extra or []
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            dying_with_parent(cmd), stdout=log, stderr=subprocess.STDOUT, env=full_env
        )
    return Launched(name, proc, ready, log_path)


def wait_ready(launched: Launched, timeout: float = 30) -> Replica:
    """The replica once it serves; raises with its log if it exits or takes too long."""
    name, proc, ready, log_path = launched.name, launched.proc, launched.ready, launched.log_path
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"replica {name} exited: {log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"replica {name} not ready: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    ports = json.loads(ready.read_text())
    return Replica(name, proc, ports["grpc_port"], ports["http_port"], log_path)


def start_replica(
    tmp: Path,
    name: str,
    *,
    policy_dir: Path | None,
    store: Path,
    keys: list[Path],
    extra: list[str] | None = None,
    grpc_port: int = 0,
    env: dict[str, str] | None = None,
) -> Replica:
    launched = launch_replica(
        tmp,
        name,
        policy_dir=policy_dir,
        store=store,
        keys=keys,
        extra=extra,
        grpc_port=grpc_port,
        env=env,
    )
    return wait_ready(launched)


def http(method: str, url: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def ahttp(method: str, url: str, body: Any = None, token: str = "") -> tuple[int, Any]:
    return await asyncio.to_thread(http, method, url, body, token)


@dataclass
class Recorder:
    """An ``activate`` that records what it was given; can be told to refuse."""

    activated: list[ActiveBundle] = field(default_factory=list)
    refuse: str = ""

    def __call__(self, bundle: ActiveBundle) -> None:
        if self.refuse:
            raise ValueError(self.refuse)
        self.activated.append(bundle)

    @property
    def revisions(self) -> list[int]:
        return [b.revision for b in self.activated]


def make_client(
    tmp: Path,
    cid: str,
    targets: list[str],
    trusted: TrustedKeys,
    *,
    kind: int = distribution_pb2.CLIENT_KIND_SIDECAR,
    server: str = "kubernetes-mcp",
    heartbeat_s: float = 0.3,
    recorder: Recorder | None = None,
    counters: Callable[[], dict[str, float]] | None = None,
    summary: Callable[[], dict[str, Any]] | None = None,
    audit_keys: tuple[distribution_pb2.AuditKey, ...] = (),
) -> tuple[DistributionClient, Recorder]:
    rec = recorder or Recorder()
    identity = distribution_pb2.ClientIdentity(
        kind=kind,
        id=cid,
        node="node-1",
        namespace="payments",
        pod=f"pod-{cid}",
        tenant="payments",
        server=server,
        version="test",
    )
    settings = ClientSettings(
        targets=targets,
        state_dir=tmp / "clients" / cid,
        trusted=trusted,
        heartbeat_interval_s=heartbeat_s,
        backoff=Backoff(base_s=0.05, cap_s=0.5),
        audit_interval_s=0.1,
        rpc_timeout_s=3,
        audit_keys=audit_keys,
    )
    client = DistributionClient(settings, identity, rec, counters=counters, summary=summary)
    return client, rec


async def eventually(
    predicate: Callable[[], bool], within: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``palisade`` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})},
    )


async def acli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, *args, env=env)
