"""The worked example with real MCP traffic: agent -> palisade sidecar -> Kubernetes MCP server.

Starts, in a temporary directory and on free local ports:

1. the example MCP server standing in for the Kubernetes tools (``k8s_server.py``);
2. ``palisade sidecar`` in front of it with the example bundle
   (``examples/payments-bundle.yaml``), a signed audit log and development tokens;

then runs the scripted SRE agent (``sre_agent.py``, the MCP Python SDK client),
prints each call with the sidecar's decision, verifies the audit file's signed
hash chain and prints a summary. Exit status 0 only when every decision was the
expected one and the audit chain verifies. ``make demo`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

from sre_agent import triage

from palisade.audit import load_public_key, verify_files

HERE = Path(__file__).parent
BUNDLE = HERE.parent / "payments-bundle.yaml"
COLOURS = {"allow": "green", "deny": "red", "require_approval": "yellow", "throttle": "magenta"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a demo process exited early ({proc.args!r})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


@contextlib.contextmanager
def process(cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(port, proc)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run(work: Path, bundle: Path, console: Console) -> int:
    up_port, sc_port = free_port(), free_port()
    audit_dir = work / "audit"
    server = [sys.executable, str(HERE / "k8s_server.py"), "--port", str(up_port)]
    sidecar = [
        sys.executable, "-m", "palisade.cli.main", "sidecar",
        "--listen", f"127.0.0.1:{sc_port}",
        "--upstream", f"http://127.0.0.1:{up_port}",
        "--server-name", "kubernetes-mcp",
        "--bundle", str(bundle), "--allow-unsigned-bundles",
        "--state-dir", str(work / "state"),
        "--audit-dir", str(audit_dir),
        "--socket", str(work / "check.sock"),
        "--dev-auth",
        "--dev-token", "sre-token=sre-agent-payments:payments:oncall@payments.example",
        "--log-level", "warning",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{sc_port}/mcp"
    with (
        process(server, up_port, work / "k8s-server.log"),
        process(sidecar, sc_port, work / "sidecar.log") as sc_proc,
    ):
        console.print(
            f"[bold]Palisade MCP demo[/]: agent -> sidecar {url} -> kubernetes-mcp "
            f"127.0.0.1:{up_port}; bundle [cyan]{bundle.name}[/]"
        )
        shown, steps = asyncio.run(triage(url, "sre-token"))
        sc_proc.send_signal(signal.SIGTERM)
        sc_proc.wait(15)
    audit_path = audit_dir / "audit.jsonl"
    public = load_public_key(str(audit_dir / "audit-key.pub.pem"))
    result = verify_files([audit_path], trusted=[public])
    records = [json.loads(line) for line in audit_path.read_text().splitlines()]
    decisions = [r for r in records if r.get("kind") == "decision"]
    counts = collections.Counter(r["decision"] for r in decisions)
    for step, rec in zip(steps, decisions, strict=False):
        step.rule = step.rule or rec["rule_id"]  # the audit names the rule of allowed calls too
    console.print(f"tools the agent was shown: {', '.join(shown)}")
    table = Table(title="SRE agent on call for payments, through the Palisade sidecar")
    for col in ("#", "the agent wants to", "tool", "decision", "rule", "what came back"):
        table.add_column(col, overflow="fold")
    for i, s in enumerate(steps, 1):
        colour = COLOURS.get(s.decision, "white")
        table.add_row(str(i), s.intent, s.tool, f"[{colour}]{s.decision}[/]", s.rule, s.detail)
    console.print(table)

    status = "[green]verified[/]" if result.ok else f"[red]FAILED[/] {result.findings[:1]}"
    console.print(
        f"audit {audit_path}: {result.records} signed, hash-chained records {status}; "
        f"head {result.head[:23]}..."
    )
    summary = Table(title="Summary")
    summary.add_column("decision")
    summary.add_column("calls", justify="right")
    summary.add_column("audit records", justify="right")
    seen = collections.Counter(s.decision for s in steps)
    for d in ("allow", "deny", "require_approval", "throttle"):
        summary.add_row(f"[{COLOURS[d]}]{d}[/]", str(seen[d]), str(counts[d]))
    console.print(summary)

    ok = result.ok and all(seen[d] for d in ("allow", "deny", "require_approval", "throttle"))
    ok = ok and len(decisions) == len(steps) and "resources_delete" not in shown
    ok = ok and all(s.decision == "deny" for s in steps if s.tool == "resources_delete")
    ok = ok and all("IGNORE ALL" not in s.detail for s in steps)
    console.print("[green]demo passed[/]" if ok else "[red]demo FAILED[/]")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ns = parser.parse_args()
    console = Console(width=170)
    work = Path(tempfile.mkdtemp(prefix="palisade-mcp-demo-", dir="/tmp"))
    try:
        return run(work, ns.bundle, console)
    finally:
        if ns.keep:
            console.print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
