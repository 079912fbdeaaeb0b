"""A hostile MCP upstream for the bypass tests, and the readers a client might use.

:class:`Hostile` is a raw aiohttp server in process that speaks just enough MCP
(initialize, tools/list, tools/call) and lets each test replace any answer with
bytes of its choosing: another id type, odd SSE framing, a hang, a crash. The
sidecar in front of it is the real one (``run_sidecar`` of the proxy tests).

:func:`whatwg_events` is an independent, character-by-character reading of an
event stream as the WHATWG HTML standard specifies; :func:`naive_events` is the
lax reading many hand-written clients do. A bypass is whatever either finds in
the sidecar's output that the sidecar should have filtered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.harness.peers import free_port

SERVER_INFO = {"name": "hostile", "version": "1.0.0"}

#: What the hostile server lists: helm_install is not registered in the proxy
#: tests' bundle, so the sidecar must hide it; pods_list is registered (read).
TOOLS: list[dict[str, Any]] = [
    {
        "name": "pods_list",
        "description": "List pods",
        "inputSchema": {"type": "object", "properties": {"namespace": {"type": "string"}}},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "helm_install",
        "description": "Install a chart",
        "inputSchema": {"type": "object"},
        "annotations": {"destructiveHint": True},
    },
]

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.StreamResponse | None]]


def answer(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def listed_tools(tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"tools": tools if tools is not None else TOOLS}


async def sse(request: web.Request, *chunks: bytes, close: bool = True) -> web.StreamResponse:
    """An SSE answer made of exactly these bytes, chunk by chunk."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for chunk in chunks:
        await resp.write(chunk)
        await asyncio.sleep(0)
    if close:
        await resp.write_eof()
    return resp


@dataclass
class Hostile:
    """The server; ``handlers[method]`` overrides its answer (None: the default)."""

    url: str = ""
    handlers: dict[str, Handler] = field(default_factory=dict)
    #: Session ids handed out by initialize, in order (a test may preset them).
    session_ids: list[str] = field(default_factory=list)
    #: Messages received, as parsed.
    received: list[dict[str, Any]] = field(default_factory=list)
    #: Legacy transport: the endpoint event's session id, and queued stream bytes.
    endpoint_ids: list[str] = field(default_factory=list)
    legacy_out: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_session(self) -> str:
        if self.session_ids:
            return self.session_ids.pop(0)
        return f"hostile-{next(self._counter)}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        msg = await request.json()
        self.received.append(msg)
        method = msg.get("method")
        custom = self.handlers.get(str(method))
        if custom is not None:
            out = await custom(request, msg)
            if out is not None:
                return out
        if "id" not in msg:
            return web.Response(status=202)
        if method == "initialize":
            result = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": SERVER_INFO,
            }
            resp = web.json_response(answer(msg["id"], result))
            resp.headers["Mcp-Session-Id"] = self.next_session()
            return resp
        if method == "tools/list":
            return web.json_response(answer(msg["id"], listed_tools()))
        if method == "tools/call":
            text = f"ran {msg['params']['name']}"
            return web.json_response(
                answer(msg["id"], {"content": [{"type": "text", "text": text}]})
            )
        return web.json_response(answer(msg["id"], {}))

    async def get(self, request: web.Request) -> web.StreamResponse:
        custom = self.handlers.get("GET")
        if custom is not None:
            out = await custom(request, {})
            if out is not None:
                return out
        return web.Response(status=405)

    async def legacy_stream(self, request: web.Request) -> web.StreamResponse:
        custom = self.handlers.get("GET /sse")
        if custom is not None:
            out = await custom(request, {})
            if out is not None:
                return out
        sid = self.endpoint_ids.pop(0) if self.endpoint_ids else f"legacy-{next(self._counter)}"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(f"event: endpoint\ndata: /messages/?session_id={sid}\n\n".encode())
        while True:
            chunk = await self.legacy_out.get()
            if not chunk:
                break
            await resp.write(chunk)
        return resp

    async def legacy_message(self, request: web.Request) -> web.StreamResponse:
        msg = await request.json()
        self.received.append(msg)
        custom = self.handlers.get("legacy " + str(msg.get("method")))
        if custom is not None:
            out = await custom(request, msg)
            if out is not None:
                return out
        if "id" in msg:
            method = msg.get("method")
            if method == "initialize":
                result: Any = {
                    "protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": SERVER_INFO,
                }
            elif method == "tools/list":
                result = listed_tools()
            elif method == "tools/call":
                result = {"content": [{"type": "text", "text": "ran"}]}
            else:
                result = {}
            doc = json.dumps(answer(msg["id"], result))
            await self.legacy_out.put(f"event: message\ndata: {doc}\n\n".encode())
        return web.Response(status=202, text="Accepted")


async def _deleted(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


@contextlib.asynccontextmanager
async def hostile_upstream() -> AsyncIterator[Hostile]:
    h = Hostile()
    app = web.Application()
    app.router.add_post("/mcp", h.handle)
    app.router.add_get("/mcp", h.get)
    app.router.add_delete("/mcp", _deleted)
    app.router.add_get("/sse", h.legacy_stream)
    app.router.add_post("/messages/", h.legacy_message)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    h.url = f"http://127.0.0.1:{port}"
    try:
        yield h
    finally:
        h.legacy_out.put_nowait(b"")
        await runner.cleanup()


# -- how clients read what the sidecar sent ------------------------------------------


def whatwg_events(stream: bytes) -> list[tuple[str, str]]:
    """(type, data) of every event a standard EventSource dispatches from ``stream``."""
    text = stream.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    events: list[tuple[str, str]] = []
    data: list[str] = []
    kind = ""
    line = ""
    i = 0
    lines: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\r":
            lines.append(line)
            line = ""
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif c == "\n":
            lines.append(line)
            line = ""
        else:
            line += c
        i += 1
    for ln in lines:  # an unterminated last line is never processed
        if ln == "":
            if data:
                events.append((kind or "message", "\n".join(data)))
            data, kind = [], ""
            continue
        if ln.startswith(":"):
            continue
        name, colon, value = ln.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
    return events


def naive_events(stream: bytes) -> list[tuple[str, str]]:
    """The lax reading: LF only, ``data:`` lines with any spacing, BOM kept or not."""
    out = []
    text = stream.decode("utf-8", errors="replace").replace("\ufeff", "")
    for block in text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n"):
        data = [ln[5:].lstrip() for ln in block.split("\n") if ln.startswith("data")]
        if data:
            out.append(("message", "\n".join(data)))
    return out


def messages_in(stream: bytes) -> list[dict[str, Any]]:
    """Every JSON object any of the readers above finds in ``stream``."""
    found = []
    for reader in (whatwg_events, naive_events):
        for _, data in reader(stream):
            for candidate in (data, *data.split("\n")):
                with contextlib.suppress(ValueError):
                    doc = json.loads(candidate)
                    if isinstance(doc, dict):
                        found.append(doc)
    return found


def tool_names_seen(docs: list[dict[str, Any]]) -> set[str]:
    names = set()
    for doc in docs:
        result = doc.get("result")
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            names |= {t.get("name") for t in result["tools"] if isinstance(t, dict)}
    return names
