"""A small MCP server (MCP Python SDK) whose output the attacker writes, for e2e tests.

``attacker_output`` (untrusted in ``attacker_bundle.yaml``) returns one of
:data:`OUTPUTS` by name; ``pods_delete`` echoes the arguments it received (so a
test sees what reached the upstream); ``secret_text`` (trusted) returns one of
:data:`SECRETS` and logs it while it runs; ``big_log`` (untrusted) returns a
log of the asked size.

    python tests/sidecar/quarantine/attacker_server.py --port 8083
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.sidecar.quarantine.attacks import OUTPUTS, SECRETS

READ = ToolAnnotations(read_only_hint=True)


def build_server() -> MCPServer:
    mcp = MCPServer("kubernetes-mcp", version="1.4.2")

    @mcp.tool(annotations=READ)
    def attacker_output(case: str) -> str:
        """Tool output written by the attacker."""
        return OUTPUTS[case]

    @mcp.tool(annotations=READ)
    def pods_delete(namespace: str, name: str) -> str:
        """Echoes what the upstream received."""
        return json.dumps({"namespace": namespace, "name": name})

    @mcp.tool(annotations=READ)
    async def secret_text(case: str, ctx: Context) -> str:
        """A trusted tool whose output and log carry a secret."""
        await ctx.info(SECRETS[case])
        return SECRETS[case]

    @mcp.tool(annotations=READ)
    def big_log(size: int) -> str:
        """A log of ``size`` bytes."""
        line = "2026-11-21T04:58:11.004Z ERROR connection refused\n"
        return (line * (size // len(line) + 1))[:size]

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
    app = build_server().streamable_http_app(transport_security=security, host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
