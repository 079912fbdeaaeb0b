"""Real peers for the bypass tests: a real sidecar app in process, raw HTTP to it.

The upstream is the example Kubernetes MCP server in a subprocess (as in
``tests/sidecar/proxy``), the sidecar the real aiohttp app with the real engine,
audit writer and whichever authenticator the test gives. :func:`raw_exchange`
writes request bytes to the socket as they are, so duplicated or conflicting
fields reach the sidecar exactly as an attacker would send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palisade.audit import verify_files
from sidecar.core import ProxyCore
from sidecar.identity import Authenticator
from sidecar.settings import Limits
from tests.sidecar.proxy.conftest import run_sidecar


@dataclass
class Peer:
    port: int
    core: ProxyCore
    audit_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def verified(self) -> list[dict[str, Any]]:
        """The audit records, once the whole chain verified (hashes, signatures, order)."""
        result = verify_files([self.audit_path])
        assert result.ok, [str(f) for f in result.findings]
        return self.audit()


@contextlib.asynccontextmanager
async def serve(
    upstream_url: str,
    tmp: Path,
    *,
    authenticator: Callable[[str], Authenticator] | None = None,
    limits: Limits | None = None,
) -> AsyncIterator[Peer]:
    """A sidecar on a free port; ``authenticator`` gets the resource URI (default: dev tokens)."""
    async with run_sidecar(upstream_url, tmp, limits, authenticator=authenticator) as sc:
        yield Peer(int(sc.base.rsplit(":", 1)[1]), sc.core, sc.audit_path)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        text = self.body.decode("utf-8", "replace")
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            data = [ln[5:].strip() for ln in text.splitlines() if ln.startswith("data:")]
            docs = [json.loads(d) for d in data if d.startswith("{")]
            return [d for d in docs if "id" in d and "method" not in d][-1]
        return json.loads(text)


def request_bytes(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes = b"",
    *,
    content_length: bool = True,
) -> bytes:
    """An HTTP/1.1 request, every header line as given (duplicates and all)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if content_length and body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def raw_exchange(port: int, data: bytes, timeout_s: float = 20.0) -> Answer:
    """Send ``data`` on a fresh connection; read the whole answer (the sidecar closes it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return out


def call(name: str, arguments: dict[str, Any], request_id: int | str = 1) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


JSON_HEADERS = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
]
