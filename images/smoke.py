"""Smoke checks of a built image: unpack its layers into a directory and run, chrooted
as the image's user, what a pod would run.

- ``palisade``: ``palisade --help``; the daemons' entry modules and the compiled
  dependencies import; ``iptables -V`` (the init container's tool);
- ``palisade-example-mcp``: the example server listens on 0.0.0.0:<port> through
  the image's own entrypoint and answers an MCP ``initialize``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
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
