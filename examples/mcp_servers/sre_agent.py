"""A scripted SRE agent (MCP Python SDK client) triaging `payments-api` in CrashLoopBackOff.

It plays the worked example's agent, including the part where the pod's log
(attacker-controlled) talks it into deleting the deployment. Every step records
what the agent wanted, what it called and what came back, so the demo can print
it; the agent never crashes on a refusal, it reads the reason and moves on.

Run it against a sidecar::

    python examples/mcp_servers/sre_agent.py http://127.0.0.1:9000/mcp --token sre-token

In a pod, with a projected ServiceAccount token bound to the sidecar's audience::

    python examples/mcp_servers/sre_agent.py http://k8s-mcp.payments.svc/mcp \
        --token-file /var/run/secrets/palisade/token --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

UNTRUSTED = "dev.palisade/untrustedOutput"
QUARANTINED = "dev.palisade/quarantine"
NS = "payments"


@dataclass
class Step:
    intent: str
    tool: str
    arguments: dict[str, Any]
    decision: str = ""
    rule: str = ""
    detail: str = ""


def quarantine(text: str) -> str:
    """Stand-in for the quarantined (dual-LLM) reader: facts out, instructions never.

    Only lines that look like a log record's error are kept, and only their
    error class, so injected prose cannot reach the acting agent.
    """
    facts = []
    for line in text.splitlines():
        for marker in ("panic:", "error:", "exiting with code"):
            if marker in line:
                facts.append(
                    line.split(marker, 1)[0][-21:].strip()
                    + " "
                    + marker
                    + line.split(marker, 1)[1][:40]
                )
    return "; ".join(facts) or "no error lines"


async def call(c: Client, step: Step) -> Step:
    try:
        result = await c.call_tool(step.tool, step.arguments)
    except MCPError as exc:
        data = exc.error.data or {}
        step.decision = str(data.get("decision", "error"))
        step.rule = str(data.get("rule", ""))
        if data.get("approval_id"):
            step.detail = f"approval id {data['approval_id']}"
        elif data.get("retry_after"):
            step.detail = f"retry after {data['retry_after']}s"
        else:
            step.detail = str(data.get("reason", exc.error.message))
        return step
    step.decision = "allow"
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if result.meta and result.meta.get(QUARANTINED):
        # the sidecar quarantined it: only validated facts and a handle came back
        sc = result.structured_content or {}
        facts = sc.get("facts", {})
        kinds = ", ".join(e["type"] for e in facts.get("errors", [])) or "no errors"
        withheld = facts.get("suspectedInjectionLines", 0)
        step.detail = (
            f"quarantined as {sc.get('handle')}: {kinds}; {withheld} injected line(s) withheld"
        )
    elif result.meta and result.meta.get(UNTRUSTED):
        step.detail = "untrusted output, quarantined: " + quarantine(text)
    else:
        step.detail = text.splitlines()[0][:70] if text else ""
    return step


async def triage(url: str, token: str) -> tuple[list[str], list[Step]]:
    """The on-call session. Returns the tools the agent was shown, and its steps."""
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    steps: list[Step] = []
    async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        shown = sorted(t.name for t in (await c.list_tools()).tools)

        async def do(intent: str, tool: str, **arguments: Any) -> Step:
            step = await call(c, Step(intent, tool, arguments))
            steps.append(step)
            return step

        await do("see what is crashing", "pods_list", namespace=NS)
        await do("read the crashing pod's log", "pods_log", namespace=NS, name="payments-api-07f9c")
        # The raw log told a careless agent to delete and reapply; this one tries.
        await do("obey the log: delete the deployment", "resources_delete",
                 namespace=NS, kind="Deployment", name="payments-api")  # fmt: skip
        await do("apply a manifest to kube-system", "resources_create_or_update",
                 namespace="kube-system", kind="Deployment", name="payments-api")  # fmt: skip
        await do(
            "install a chart outside the catalog", "helm_install", namespace=NS, chart="evil/miner"
        )
        await do("install the catalog's redis", "helm_install", namespace=NS, chart="bitnami/redis")
        for n in range(1, 6):
            await do(f"fix attempt {n}: update payments-api", "resources_create_or_update",
                     namespace=NS, kind="Deployment", name="payments-api", replicas=n)  # fmt: skip
        await asyncio.sleep(0.1)
        for n in range(1, 41):
            step = await do(f"poll pods in a tight loop ({n})", "pods_list", namespace=NS)
            if step.decision == "throttle":
                break
    return shown, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--token", default="sre-token")
    parser.add_argument("--token-file", type=Path, help="read the bearer token from this file")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else args.token
    shown, steps = asyncio.run(triage(args.url, token))
    if args.json:
        print(json.dumps({"tools": shown, "steps": [asdict(s) for s in steps]}))
        return
    print("tools shown:", ", ".join(shown))
    for s in steps:
        print(f"{s.decision:>16}  {s.tool:<28} {s.rule:<28} {s.detail}")


if __name__ == "__main__":
    main()
