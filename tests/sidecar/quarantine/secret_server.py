"""A small MCP server (MCP Python SDK) whose ordinary tools leak credentials, for e2e tests.

``config_view`` prints a kubeconfig with a ServiceAccount token and a client
key, ``env_dump`` an environment with a database password and an AWS key, and
``pods_describe`` (untrusted in the test bundle) a poisoned ``kubectl describe``,
``events_list`` (untrusted) poisoned events as structured output with its own schema;
the resource ``k8s://config/kubeconfig`` and the prompt ``db_debug`` leak the same.

    python tests/sidecar/quarantine/secret_server.py --port 8082
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pydantic import BaseModel

from tests.sidecar.quarantine.samples import DESCRIBE, EVENTS, INJECTION

READ = ToolAnnotations(read_only_hint=True)
SA_TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6InNhIn0."
    "eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6cGF5bWVudHM6ZGVmYXVsdCJ9."
    "c2lnbmF0dXJlLW9mLXRoZS1zYS10b2tlbg"
)
CLIENT_KEY = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUFCQw=="
DB_PASSWORD = "Zq7-hunter2-payments"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"

KUBECONFIG = f"""\
apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster: {{server: "https://10.0.0.1:6443"}}
users:
- name: payments-deployer
  user:
    token: {SA_TOKEN}
    client-key-data: {CLIENT_KEY}
"""


class Events(BaseModel):
    """Structured output: the SDK declares a closed ``outputSchema`` for it."""

    namespace: str
    lines: list[str]


def build_server() -> MCPServer:
    mcp = MCPServer("kubernetes-mcp", version="1.4.2")

    @mcp.tool(annotations=READ)
    def config_view() -> str:
        """The kubeconfig in use."""
        return KUBECONFIG

    @mcp.tool(annotations=READ)
    def env_dump(pod: str) -> str:
        """A pod's environment."""
        return (
            f"POD={pod}\nDB_PASSWORD={DB_PASSWORD}\nAWS_ACCESS_KEY_ID={AWS_KEY}\nLOG_LEVEL=info\n"
        )

    @mcp.tool(annotations=READ)
    def pods_describe(namespace: str, name: str) -> str:
        """kubectl describe pod (untrusted: fields written by the workload)."""
        return DESCRIBE + f"    SA token: {SA_TOKEN}\n"

    @mcp.tool(annotations=READ)
    def db_check() -> str:
        """Check the database connection (fails, quoting its connection settings)."""
        raise ToolError(f"cannot connect to db:5432 with DB_PASSWORD={DB_PASSWORD}")

    @mcp.tool(annotations=READ)
    async def pods_follow(namespace: str, name: str, ctx: Context) -> str:
        """Follow a pod's log (untrusted): progress and log messages carry its lines."""
        await ctx.info(INJECTION)
        await ctx.report_progress(1, 2, INJECTION)
        await ctx.report_progress(2, 2, "done")
        return DESCRIBE

    @mcp.tool(annotations=READ)
    def events_list(namespace: str) -> Events:
        """Recent events of a namespace (untrusted: messages come from workloads)."""
        return Events(namespace=namespace, lines=EVENTS.splitlines())

    @mcp.resource("k8s://config/kubeconfig", mime_type="application/yaml")
    def kubeconfig() -> str:
        """The kubeconfig in use, as a resource."""
        return KUBECONFIG

    @mcp.resource("k8s://pods/payments", mime_type="text/plain")
    def payments_pods() -> str:
        """The payments namespace's pods, as a resource."""
        return "payments-api-07f9c  Running"

    @mcp.prompt()
    def db_debug(pod: str) -> str:
        """A prompt that quotes the pod's database settings."""
        return f"Debug {pod}: it connects to db:5432 with DB_PASSWORD={DB_PASSWORD}."

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true")
    args = parser.parse_args()
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = build_server().streamable_http_app(
        json_response=args.json_response, transport_security=security, host="127.0.0.1"
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
