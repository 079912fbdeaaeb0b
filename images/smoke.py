"""Smoke checks of a built image: unpack its layers into a directory and run, chrooted
as the image's user, what a pod would run.

- ``palisade``: ``palisade --help``; the daemons' entry modules and the compiled
  dependencies import; ``iptables -V`` (the init container's tool);
- ``palisade-example-mcp``: the example server listens on 0.0.0.0:<port> through
  the image's own entrypoint and answers an MCP ``initialize``;
- ``palisade-kubernetes-mcp``: ``--version`` is the pinned one; the image's own
  entrypoint and config (with a kubeconfig naming no credential) refuse an
  ``initialize`` without a bearer token (401) and answer one that carries one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from images import definition, oci
from images.rootfs import root_command, run_in_root

IMPORTS = (
    "import sidecar.main, injector.main, distributor.main, nodeagent.main, "
    "grpc, cryptography, msgspec, orjson, uvloop, psycopg, cel, yaml"
)


def unpack_image(layout: Path, manifest_digest: str, dest: Path) -> Path:
    oci.unpack(oci.BlobStore(layout), manifest_digest, dest)
    return dest


def check_palisade(rootfs: Path) -> list[str]:
    """Run the checks; returns one line per check passed (raises on a failure)."""
    user = definition.USER
    done = []
    out = run_in_root(rootfs, ["palisade", "--help"], userspec=user).stdout
    if "usage" not in out.lower():
        raise RuntimeError(f"palisade --help printed no usage:\n{out}")
    done.append("palisade --help")
    run_in_root(rootfs, ["python3", "-c", IMPORTS], userspec=user)
    done.append("python3 -c 'import sidecar.main, ... grpc, cryptography, msgspec, orjson'")
    version = run_in_root(rootfs, ["iptables", "-V"], userspec=user).stdout.strip()
    done.append(f"iptables -V: {version}")
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "palisade-images-smoke", "version": "0"},
    },
}


def _initialize(port: int, headers: dict[str, str], timeout: float) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/mcp",
        data=json.dumps(INITIALIZE).encode(),
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **headers,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


#: A kubeconfig naming a cluster and no credential (tools/list needs no cluster).
NO_CREDENTIAL_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: nobody}}]
current-context: c
users: [{name: nobody, user: {}}]
"""


def check_kube_mcp(rootfs: Path, timeout: float = 60.0) -> list[str]:
    """``--version``, then the entrypoint on a free port: 401 without a token, 200 with."""
    user = definition.USER
    version = run_in_root(rootfs, [definition.KUBE_MCP_BINARY, "--version"], userspec=user)
    if version.stdout.strip() != f"v{definition.KUBE_MCP_VERSION}":
        raise RuntimeError(f"kubernetes-mcp-server --version printed {version.stdout!r}")
    done = [f"kubernetes-mcp-server --version: {version.stdout.strip()}"]
    inside = "/home/nonroot/smoke-kubeconfig"
    kubeconfig = rootfs / inside.lstrip("/")
    kubeconfig.write_text(NO_CREDENTIAL_KUBECONFIG)
    kubeconfig.chmod(0o644)
    port = _free_port()
    cmd = list(definition.KUBE_MCP.cmd)
    cmd[cmd.index("--port") + 1] = str(port)
    argv = [*definition.KUBE_MCP.entrypoint, *cmd, "--kubeconfig", inside]
    proc = subprocess.Popen(
        root_command(rootfs, argv, userspec=user),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_listening(proc, port, timeout)
        status, body = _initialize(port, {}, timeout)
        if status != 401:
            raise RuntimeError(f"an initialize without a token got {status}: {body[:300]}")
        status, body = _initialize(port, {"Authorization": "Bearer smoke"}, timeout)
        if status != 200 or '"serverInfo"' not in body:
            raise RuntimeError(f"an initialize with a token got {status}: {body[:300]}")
    finally:
        _stop(proc)
        kubeconfig.unlink()
    done.append(f"{' '.join(argv[:3])} ...: 401 without a bearer token, initialize ok with one")
    return done


def _wait_listening(proc: subprocess.Popen[str], port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{proc.communicate()[0]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_example_mcp(rootfs: Path, timeout: float = 60.0) -> list[str]:
    """Start the image's entrypoint on a free port and send an MCP initialize."""
    port = _free_port()
    argv = [*definition.EXAMPLE_MCP.entrypoint, "--port", str(port)]
    proc = subprocess.Popen(
        root_command(rootfs, argv, userspec=definition.USER),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the example server exited:\n{proc.communicate()[0]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/mcp",
            data=json.dumps(INITIALIZE).encode(),
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read().decode()
        if '"serverInfo"' not in body:
            raise RuntimeError(f"no serverInfo in the initialize answer: {body[:500]}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return [f"{' '.join(definition.EXAMPLE_MCP.entrypoint)} --port {port}: MCP initialize ok"]
