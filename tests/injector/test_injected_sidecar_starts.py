"""An injected sidecar actually starts: from the chart's values to a ready, deciding proxy.

The chain, with nothing stubbed: the chart (real ``helm template``) with a distributor
address and the public half of its signing key -> the injector's env -> the injector's
settings -> the AdmissionReview answer for an MCP pod -> the sidecar container it adds.
That container's command line and env (downward-API values filled in as the kubelet
would, volume paths remapped into a temp dir) then run as a real ``palisade sidecar``
process, against a real ``palisade distributor`` (file mode, signing with the private
half) and the example MCP server. It must become ready on the pushed bundle and decide
MCP SDK calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

from injector import admission
from injector.main import register, settings_from
from injector.review import decode_patch
from palisade.bundle.signing import generate_key, private_key_pem, public_key_pem
from tests.chart.render import container_env, one, render
from tests.harness.peers import free_port, get_json, stop, wait_port
from tests.harness.pki import issue, make_ca
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

pytestmark = pytest.mark.e2e  # helm (scripts/setup.d/40-kube.sh) and real processes

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_SERVER = ROOT / "examples" / "mcp_servers" / "k8s_server.py"
TOKEN = "sre-token"  # a development token, mapped with --dev-token
POD = {"name": "kubernetes-mcp-7f9c", "namespace": "payments", "uid": "5b0c-uid", "node": "n-1"}

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
        - {name: pods_list, risk: read}
        - {name: resources_delete, risk: destructive}
  tenants:
    - {name: payments, namespaces: [payments]}
  agents:
    - {id: sre-agent, tenant: payments, namespaces: [payments]}
  rules:
    - id: deny-destructive
      match: {risk: [destructive]}
      decision: deny
      reason: destructive calls are refused
    - id: allow-reads
      match: {risk: [read], tenants: [payments]}
      decision: allow
      reason: reads are allowed for payments
"""


def python_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)}


@dataclass
class Peers:
    tmp: Path
    public_pem: str
    grpc_port: int
    http_port: int
    upstream_port: int
    #: PEM CA of the distributor's TLS certificate; "" when it serves plaintext gRPC
    ca_pem: str = ""


@pytest.fixture(params=["plaintext", "tls"])
def peers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peers]:
    """A real distributor (file mode, its own signing key; plaintext or TLS gRPC) and the
    example MCP server."""
    key = generate_key()
    (tmp_path / "signing.pem").write_bytes(private_key_pem(key))
    tls_args: list[str] = []
    ca_pem = ""
    if request.param == "tls":
        ca = make_ca()
        server = issue(ca, "distributor", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        (tmp_path / "dist.crt").write_bytes(server.cert_pem)
        (tmp_path / "dist.key").write_bytes(server.key_pem)
        tls_args = [
            "--tls-cert",
            str(tmp_path / "dist.crt"),
            "--tls-key",
            str(tmp_path / "dist.key"),
        ]
        ca_pem = ca.cert_pem.decode()
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "payments.yaml").write_text(POLICY)
    grpc_port, upstream_port = free_port(), free_port()
    ready = tmp_path / "distributor.ready"
    dist_log = tmp_path / "distributor.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with dist_log.open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "palisade.cli.main", "distributor",
                        "--policy-dir", str(tmp_path / "policies"),
                        "--signing-key", str(tmp_path / "signing.pem"),
                        "--store", str(tmp_path / "distributor.db"),
                        "--grpc-listen", f"127.0.0.1:{grpc_port}",
                        "--http-listen", "127.0.0.1:0",
                        "--ready-file", str(ready),
                        *tls_args,
                    ],
                    stdout=log, stderr=subprocess.STDOUT, env=python_env(),
                )
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"distributor did not start:\n{dist_log.read_text()[-3000:]}")
            time.sleep(0.05)
        http_port = int(json.loads(ready.read_text())["http_port"])
        state = tmp_path / "upstream-state"
        state.mkdir()
        procs.append(
            subprocess.Popen(
                [sys.executable, str(EXAMPLE_SERVER), "--port", str(upstream_port),
                 "--state-dir", str(state)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        wait_port(upstream_port, procs[1], log=tmp_path / "none.log")
        pem = public_key_pem(key).decode()
        yield Peers(tmp_path, pem, grpc_port, http_port, upstream_port, ca_pem)
    finally:
        for proc in reversed(procs):
            stop(proc)


DEV_AUTH = ["--dev-auth", "--dev-token", f"{TOKEN}=sre-agent:payments"]


def with_distributor(peers: Peers) -> dict[str, Any]:
    distributor: dict[str, Any] = {
        "address": f"127.0.0.1:{peers.grpc_port}",
        "publicKeys": [peers.public_pem],
    }
    if peers.ca_pem:
        distributor["tls"] = {"secretName": "distributor-tls"}
    return {"distributor": distributor, "sidecar": {"extraArgs": DEV_AUTH}}


def injected_container(peers: Peers, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """Chart values -> injector env -> injector settings -> the container it adds."""
    values = values or with_distributor(peers)
    chart_env = container_env(one(render(values), "Deployment", "palisade-injector"))
    env = {k: v for k, v in chart_env.items() if isinstance(v, str)}
    ca_ref = chart_env.get("PALISADE_SIDECAR_DISTRIBUTOR_CA")
    tls = bool(values["distributor"].get("tls"))
    assert (ca_ref is not None) == tls
    if tls:  # what the kubelet puts there: the ca.crt key of the TLS Secret, alone
        assert ca_ref == {"secretKeyRef": {"name": "distributor-tls", "key": "ca.crt"}}
        env["PALISADE_SIDECAR_DISTRIBUTOR_CA"] = peers.ca_pem
    parser = argparse.ArgumentParser()
    register(parser, env)
    injection = settings_from(parser.parse_args([])).injection
    mcp_pod = pod(container("server", ("mcp", peers.upstream_port)), name=POD["name"])
    answer = admission.serve(review(mcp_pod, namespace=POD["namespace"]), ENABLED, injection)
    assert answer["response"]["allowed"], answer
    patched = apply_patch(mcp_pod, decode_patch(answer))
    spec = patched["spec"]
    (sidecar,) = [
        c
        for c in spec["containers"] + spec.get("initContainers", [])
        if c["name"] == "palisade-sidecar"
    ]
    return sidecar


def kubelet_view(
    sidecar: dict[str, Any], root: Path, port: int
) -> tuple[list[str], dict[str, str]]:
    """The command line and env the kubelet would run, with volumes under ``root``.

    Downward-API fields are filled in; each volume mount path is remapped to a
    directory of its own; the listen port is moved to a free one on loopback
    (in a pod the sidecar owns its network namespace's port 9400).
    """
    fields = {
        "metadata.name": POD["name"],
        "metadata.namespace": POD["namespace"],
        "metadata.uid": POD["uid"],
        "spec.nodeName": POD["node"],
        "spec.serviceAccountName": "default",
        "status.podIP": "127.0.0.1",
    }
    env: dict[str, str] = {}
    for item in sidecar["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    remap = {m["mountPath"]: str(root / m["name"]) for m in sidecar["volumeMounts"]}
    for path in remap.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    args: list[str] = []
    for arg in sidecar["args"]:
        for mount, local in remap.items():
            if arg == mount or arg.startswith(mount + "/"):
                arg = local + arg[len(mount) :]
        if arg.startswith("0.0.0.0:"):
            arg = f"127.0.0.1:{port}"
        args.append(arg)
    return args, env


def run_as_the_kubelet_would(
    palisade: str, args: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen[bytes]:
    """``command`` + ``args`` with the container's env (plus PATH/PYTHONPATH only)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [palisade, *args], stdout=log, stderr=subprocess.STDOUT, env={**python_env(), **env}
        )


@contextlib.asynccontextmanager
async def mcp_client(url: str) -> AsyncIterator[Client]:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as c,
    ):
        yield c


async def test_the_injected_sidecar_joins_the_distributor_becomes_ready_and_decides(
    peers: Peers,
) -> None:
    sidecar = injected_container(peers)
    env_names = {e["name"] for e in sidecar["env"]}
    assert {"PALISADE_DISTRIBUTOR", "PALISADE_TRUSTED_KEY"} <= env_names
    assert ("PALISADE_DISTRIBUTOR_CA" in env_names) == bool(peers.ca_pem)
    assert sidecar["command"] == ["palisade"]
    args, env = kubelet_view(sidecar, peers.tmp / "volumes", port := free_port())
    assert args[args.index("--upstream") + 1] == f"http://127.0.0.1:{peers.upstream_port}"

    palisade = shutil.which("palisade", path=str(Path(sys.executable).parent))
    assert palisade, "the palisade console script is installed next to this interpreter"
    log_path = peers.tmp / "sidecar.log"
    proc = run_as_the_kubelet_would(palisade, args, env, log_path)
    try:
        wait_port(port, proc, log=log_path)
        deadline = time.monotonic() + 30
        while True:
            status, doc = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz")
            if status == 200:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"not ready: {doc}\n{log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        assert doc["bundle_revision"] == 1
        assert doc["distributor"]["state"] == "OK"

        async with mcp_client(f"http://127.0.0.1:{port}/mcp") as c:
            allowed = await c.call_tool("pods_list", {"namespace": "payments"})
            assert not allowed.is_error
            with pytest.raises(MCPError) as denied:
                await c.call_tool("resources_delete", {"kind": "Deployment", "name": "x"})
        assert denied.value.error.data["rule"] == "deny-destructive"
        assert denied.value.error.data["bundle_revision"] == 1

        # The distributor sees it under the pod's downward-API identity.
        fleet_url = f"http://127.0.0.1:{peers.http_port}"
        deadline = time.monotonic() + 20
        while True:
            done = await asyncio.to_thread(
                subprocess.run,
                [palisade, "fleet", "sidecars", "--url", fleet_url, "-o", "json"],
                capture_output=True, text=True, timeout=60, env=python_env(),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            rows = [r for r in json.loads(done.stdout) if r["pod"] == POD["name"]]
            if rows and rows[0]["revision"] == 1:
                break
            assert time.monotonic() < deadline, f"not in the fleet as ACKed: {done.stdout}"
            await asyncio.sleep(0.2)
        row = rows[0]
        assert (row["namespace"], row["node"], row["tenant"]) == ("payments", "n-1", "payments")
        assert row["server"] == "kubernetes-mcp"

        # Both calls were audited on the audit volume, and the last good bundle is cached.
        audit = (peers.tmp / "volumes" / "palisade-audit" / "audit.jsonl").read_text()
        decisions = [json.loads(line).get("decision") for line in audit.splitlines()]
        assert "allow" in decisions and "deny" in decisions
        assert any((peers.tmp / "volumes" / "palisade-bundle-cache").iterdir())
    finally:
        stop(proc)
    assert proc.returncode == 0, log_path.read_text()[-3000:]


def test_the_same_container_without_the_key_would_crash_loop(peers: Peers) -> None:
    """What the key prevents: ``palisade sidecar --distributor`` refuses to start."""
    sidecar = injected_container(peers)
    args, env = kubelet_view(sidecar, peers.tmp / "volumes", free_port())
    del env["PALISADE_TRUSTED_KEY"]
    palisade = shutil.which("palisade", path=str(Path(sys.executable).parent))
    assert palisade
    done = subprocess.run(
        [palisade, *args], capture_output=True, text=True, timeout=60, env={**python_env(), **env}
    )
    assert done.returncode != 0
    assert "--distributor needs --trusted-key" in done.stderr


async def test_without_a_distributor_the_sidecar_runs_on_the_signed_bundle_config_map(
    peers: Peers,
) -> None:
    values = {
        "distributor": {"enabled": False, "publicKeys": [peers.public_pem]},
        "sidecar": {"bundleConfigMap": "palisade-bundle", "extraArgs": DEV_AUTH},
    }
    sidecar = injected_container(peers, values)
    assert "PALISADE_DISTRIBUTOR" not in {e["name"] for e in sidecar["env"]}
    args, env = kubelet_view(sidecar, peers.tmp / "volumes", port := free_port())
    palisade = shutil.which("palisade", path=str(Path(sys.executable).parent))
    assert palisade
    # The operator signs the bundle and puts it in the ConfigMap (here: its mounted files).
    signed = peers.tmp / "volumes" / "palisade-bundle" / "bundle.signed"
    policy = peers.tmp / "policies" / "payments.yaml"
    done = await asyncio.to_thread(
        subprocess.run,
        [palisade, "bundle", "sign", "--key", str(peers.tmp / "signing.pem"),
         "--out", str(signed), str(policy)],
        capture_output=True, text=True, timeout=60, env=python_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log_path = peers.tmp / "sidecar-cm.log"
    proc = run_as_the_kubelet_would(palisade, args, env, log_path)
    try:
        wait_port(port, proc, log=log_path)
        deadline = time.monotonic() + 30
        while True:
            status, doc = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz")
            if status == 200:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"not ready: {doc}\n{log_path.read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        assert doc["bundle_revision"] == 1
        async with mcp_client(f"http://127.0.0.1:{port}/mcp") as c:
            allowed = await c.call_tool("pods_list", {"namespace": "payments"})
            assert not allowed.is_error
            with pytest.raises(MCPError) as denied:
                await c.call_tool("resources_delete", {"kind": "Deployment", "name": "x"})
        assert denied.value.error.data["rule"] == "deny-destructive"
    finally:
        stop(proc)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
