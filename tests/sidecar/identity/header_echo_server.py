"""An MCP server (MCP Python SDK) whose one tool reports the HTTP headers it received.

Used to show what reaches the upstream through the sidecar: never the client's
token, and the upstream credential when one is configured.
Run: ``python -m tests.sidecar.identity.header_echo_server --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer


def build() -> MCPServer[Any]:
    mcp: MCPServer[Any] = MCPServer(name="header-echo", version="1.0.0")

    @mcp.tool()
    def seen_headers(ctx: Context) -> str:
        """The headers of the HTTP request that carried this call, as JSON."""
        request = ctx.request_context.request
        headers = dict(getattr(request, "headers", {}) or {})
        return json.dumps({k.lower(): v for k, v in headers.items()})

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(build().run_streamable_http_async(host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
