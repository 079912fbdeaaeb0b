"""The worked example, on embedded defaults: an SRE agent triaging `payments`.

Run it with ``make demo`` (or ``python examples/demo.py [--bundle FILE]``). It
starts the real gRPC Check server on a Unix socket in a temporary directory,
with the example bundle, a fresh Ed25519 audit key and an audit log; asks it
to decide the calls an on-call agent would make; prints the decisions; then
verifies the signed audit chain, and shows that an edited record is caught.
No cluster, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table

from palisade.audit import AuditWriter, Signer, verify_files
from palisade.runtime.metrics import DecisionMetrics
from palisade.service import EngineHolder, PolicyServicer, ServerSettings, start_server
from palisade.service.policy_source import load_policy
from palisade.service.server import stop_server
from palisade.v1 import policy_pb2, policy_pb2_grpc

BUNDLE = Path(__file__).parent / "payments-bundle.yaml"
AGENT = "sre-agent-payments"
COLOURS = {"allow": "green", "deny": "red", "require_approval": "yellow", "throttle": "magenta"}

WRITE = "resources_create_or_update"
NS = {"namespace": "payments"}
CONFIG = {**NS, "kind": "ConfigMap"}

# (what the agent wants to do, tool, arguments, session)
SCRIPT: list[tuple[str, str, dict[str, object], str]] = [
    ("read the crashing pod's logs", "pods_log", {**NS, "name": "payments-api-7d9c"}, "inc-42"),
    ("roll back the deployment", WRITE, {**NS, "kind": "Deployment"}, "inc-42"),
    ("apply a manifest to kube-system", WRITE, {"namespace": "kube-system"}, "inc-42"),
    ("delete the deployment, reapply", "resources_delete", {**NS, "name": "api"}, "inc-42"),
    ("install an uncatalogued chart", "helm_install", {**NS, "chart": "evil/miner"}, "inc-42"),
    *[(f"mutating call #{n} this session", WRITE, CONFIG, "inc-42") for n in range(2, 7)],
    *[(f"burst read #{n}", "pods_list", {}, "burst") for n in range(1, 7)],
]  # fmt: skip


def _summary(args: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items()) or "-"


async def _run(bundle: Path, work: Path, console: Console) -> int:
    signer = Signer.generate()
    (work / "audit.pem").write_bytes(signer.private_pem())
    policy = load_policy(bundle)
    audit_path = work / "audit.jsonl"
    writer = AuditWriter(audit_path, signer, source="demo")
    await writer.start()
    servicer = PolicyServicer(
        EngineHolder(policy.engine, secret_names=policy.secret_names),
        writer,
        DecisionMetrics(CollectorRegistry()),
    )
    socket = str(work / "check.sock")
    server, health, _ = await start_server(servicer, ServerSettings(socket_path=socket))
    console.print(f"[bold]Palisade demo[/]: bundle [cyan]{bundle.name}[/], Check on unix:{socket}")

    table = Table(title="SRE agent on call for payments: each tool call, decided")
    for col in ("#", "the agent wants to", "tool", "arguments", "decision", "rule", "reason"):
        table.add_column(col, overflow="fold")
    head = ""
    async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for i, (intent, tool, args, session) in enumerate(SCRIPT, start=1):
            req = policy_pb2.CheckRequest(
                agent=AGENT,
                server="kubernetes-mcp",
                server_version="0.0.52",
                tool=tool,
                session=session,
                request_id=f"demo-{i}",
            )
            req.arguments.update(args)
            if tool == "helm_install":  # a registry secretArguments field: never in the audit log
                req.arguments.update({"values": "password: hunter2"})
            resp = await stub.Check(req)
            decision = policy_pb2.Decision.Name(resp.decision).removeprefix("DECISION_").lower()
            colour = COLOURS.get(decision, "white")
            reason = resp.reason + (f" (approval {resp.approval_id})" if resp.approval_id else "")
            table.add_row(
                str(i),
                intent,
                tool,
                _summary(args),
                f"[{colour}]{decision}[/]",
                resp.rule_id,
                reason,
            )
            head = resp.audit_hash
    await stop_server(server, health, 1.0)
    await writer.aclose()
    console.print(table)

    result = verify_files([audit_path], trusted=[signer.public], expect_head=head)
    status = "[green]verified[/]" if result.ok else "[red]FAILED[/]"
    console.print(
        f"audit log {audit_path}: {result.records} signed, chained records {status}; "
        f"head {result.head[:23]}..."
    )
    leaked = "hunter2" in audit_path.read_text()
    console.print(
        f"secret argument values in the audit log: {'[red]LEAKED[/]' if leaked else 'none'}"
    )

    tampered = work / "tampered.jsonl"
    lines = audit_path.read_text().splitlines()
    record = json.loads(lines[3])
    record["decision"] = "allow"  # someone tries to hide the refused delete
    lines[3] = json.dumps(record)
    tampered.write_text("\n".join(lines) + "\n")
    finding = verify_files([tampered], trusted=[signer.public]).findings
    console.print(f"after editing record 4 by hand, verify says: [red]{finding[0]}[/]")
    return 0 if result.ok and finding and not leaked else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ns = parser.parse_args()
    console = Console(width=170)
    work = Path(tempfile.mkdtemp(prefix="palisade-demo-", dir="/tmp"))
    try:
        return asyncio.run(_run(ns.bundle, work, console))
    finally:
        if ns.keep:
            console.print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
