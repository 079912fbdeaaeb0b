"""Real peers for the conformance run: processes started and stopped by the tests.

- the conforming MCP server (:mod:`everything_server`), a subprocess;
- a token issuer (:mod:`tests.sidecar.identity.issuer`) on its own event loop thread;
- ``palisade sidecar`` in front of the server, a subprocess, verifying tokens of
  that issuer;
- the conformance suite (Node), run once per target.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.harness.peers import free_port
from tests.sidecar.identity.issuer import Issuer

HERE = Path(__file__).parent
REPO = HERE.parents[2]
VERSION = os.environ.get("PALISADE_CONFORMANCE_VERSION", "0.1.13")
CACHE = Path(os.environ.get("PALISADE_CACHE", Path.home() / ".cache" / "palisade"))
SUITE_DIR = CACHE / "conformance" / VERSION
SUITE_CLI = (
    SUITE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
)
AGENT_SUBJECT = "conformance-client"


class PeerMissing(RuntimeError):
    pass


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def process(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env or os.environ.copy()
        )
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def conformance_server(workdir: Path) -> Iterator[str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "tests.sidecar.conformance.everything_server",
        "--port",
        str(port),
    ]
    with process(argv, workdir / "server.log") as proc:
        url = f"http://127.0.0.1:{port}/mcp"
        wait_http(f"http://127.0.0.1:{port}/", proc=proc)
        yield url


def everything_entry() -> Path:
    """@modelcontextprotocol/server-everything, installed by scripts/setup.d/50-mcp-peers.sh."""
    pointer = CACHE / "npm" / "current-everything"
    entry = Path(pointer.read_text().strip()) if pointer.is_file() else None
    if entry is None or not entry.is_file():
        raise PeerMissing("@modelcontextprotocol/server-everything is missing: run make setup")
    return entry


@contextmanager
def reference_server(workdir: Path) -> Iterator[str]:
    """The reference server from npm in Streamable HTTP mode."""
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    argv = ["node", str(everything_entry()), "streamableHttp"]
    with process(argv, workdir / "everything.log", env=env) as proc:
        wait_http(f"http://127.0.0.1:{port}/mcp", proc=proc)
        yield f"http://127.0.0.1:{port}/mcp"


async def tool_names(url: str) -> list[str]:
    """The tools a server lists, asked directly with the MCP SDK client."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async with Client(streamable_http_client(url), mode="legacy") as client:
        listed = await client.list_tools()
    return sorted(t.name for t in listed.tools)


def bundle_for(server_name: str, tools: Sequence[str], out: Path) -> Path:
    """A bundle template letting the conformance agent call every listed tool."""
    lines = [
        "apiVersion: palisade.dev/v1alpha1",
        "kind: PolicyBundle",
        f"metadata: {{name: {server_name}}}",
        "spec:",
        "  defaultDecision: allow",
        "  servers:",
        f"    - name: {server_name}",
        '      versions: ["*"]',
        "      serverRequests: [sampling, elicitation, roots]  # the suite's scenarios use them",
        "      tools:",
        *(f"        - {{name: {json.dumps(t)}, risk: read}}" for t in tools),
        "  tenants: [{name: conformance, namespaces: [conformance]}]",
        "  agents:",
        "    - id: conformance-client",
        "      tenant: conformance",
        f'      identities: [{{issuer: "@ISSUER@", subject: {AGENT_SUBJECT}}}]',
        "  rules:",
        "    - {id: allow-all, match: {}, decision: allow, reason: the suite may call all}",
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


@contextmanager
def issuer_thread() -> Iterator[Issuer]:
    """The test issuer, served from a thread so synchronous fixtures can use it."""
    state = Issuer()
    state.rotate("EdDSA")
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(state.app())
    port = free_port()

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="test-issuer", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the test issuer did not start")
    state.url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@dataclass
class Sidecar:
    url: str
    resource: str
    audit_dir: Path
    proc: subprocess.Popen[bytes] = field(repr=False)


@contextmanager
def sidecar(
    workdir: Path,
    upstream_mcp_url: str,
    issuer: Issuer,
    *,
    template: Path = HERE / "data" / "bundle.yaml.in",
    server_name: str = "conformance",
    extra_args: Sequence[str] = (),
) -> Iterator[Sidecar]:
    """``palisade sidecar`` in front of the upstream, trusting ``issuer``; the bundle
    is ``template`` with ``@ISSUER@`` replaced."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    bundle = workdir / "bundle.yaml"
    bundle.write_text(template.read_text().replace("@ISSUER@", issuer.url))
    upstream_base = upstream_mcp_url.rsplit("/mcp", 1)[0]
    palisade = shutil.which("palisade", path=str(Path(sys.executable).parent)) or "palisade"
    argv = [
        palisade, "sidecar",
        "--listen", f"127.0.0.1:{port}",
        "--upstream", upstream_base,
        "--server-name", server_name,
        "--bundle", str(bundle),
        "--allow-unsigned-bundles",
        "--state-dir", str(workdir / "state"),
        "--audit-dir", str(workdir / "audit"),
        "--resource", resource,
        "--issuer", issuer.url,
        *extra_args,
    ]  # fmt: skip
    with process(argv, workdir / "sidecar.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/readyz", proc=proc)
        yield Sidecar(resource, resource, workdir / "audit", proc)


@dataclass
class SuiteResult:
    """Per scenario: passed (no FAILURE and at least one SUCCESS) and the failing checks."""

    passed: dict[str, bool]
    failures: dict[str, list[str]]
    output: str
    #: Checks with status SUCCESS, over all scenarios.
    checks_passed: int = 0
    #: Checks with status SUCCESS or FAILURE.
    checks_run: int = 0


def run_suite(
    url: str,
    outdir: Path,
    token: str | None,
    timeout: float = 420.0,
    scenario: str | None = None,
) -> SuiteResult:
    if not SUITE_CLI.is_file():
        raise PeerMissing(
            f"{SUITE_CLI} is missing: run make setup (scripts/setup.d/55-conformance.sh)"
        )
    env = os.environ.copy()
    env["PALISADE_CONFORMANCE_DIR"] = str(SUITE_DIR)
    env["NODE_OPTIONS"] = f"--import={(HERE / 'bearer-preload.mjs').as_uri()}"
    env.pop("PALISADE_CONFORMANCE_TOKEN", None)
    if token is not None:
        env["PALISADE_CONFORMANCE_TOKEN"] = token
    which = ["--scenario", scenario] if scenario else ["--suite", "all"]
    done = subprocess.run(
        ["node", str(SUITE_CLI), "server", "--url", url, "-o", str(outdir), *which],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    passed: dict[str, bool] = {}
    failures: dict[str, list[str]] = {}
    checks_passed = checks_run = 0
    for checks_file in sorted(outdir.glob("server-*/checks.json")):
        # directory names end with an ISO timestamp: server-<scenario>-2026-11-21T05-07-12-271Z
        scenario = _strip_timestamp(checks_file.parent.name.removeprefix("server-"))
        checks = json.loads(checks_file.read_text())
        failed = [
            f"{c.get('id')}: {c.get('errorMessage', '')}"
            for c in checks
            if c.get("status") == "FAILURE"
        ]
        ok = not failed and any(c.get("status") == "SUCCESS" for c in checks)
        checks_passed += sum(c.get("status") == "SUCCESS" for c in checks)
        checks_run += sum(c.get("status") in ("SUCCESS", "FAILURE") for c in checks)
        passed[scenario] = ok
        if failed:
            failures[scenario] = failed
    return SuiteResult(passed, failures, done.stdout + done.stderr, checks_passed, checks_run)


def _strip_timestamp(name: str) -> str:
    # <scenario>-YYYY-MM-DDTHH-MM-SS-mmmZ : the timestamp has 6 dash-separated fields
    parts = name.split("-")
    return "-".join(parts[:-6]) if len(parts) > 6 and parts[-1].endswith("Z") else name
