"""A pass-through HTTP proxy that records what reaches the upstream MCP server.

Sits between the sidecar and the real kubernetes-mcp-server, served from a thread
with its own event loop (the sidecar's fixtures wait synchronously): every request
is forwarded unchanged (answers streamed back as they come) and its method, path
and headers are kept, so a test can say which credential the upstream was handed
for which call.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.harness.process import free_port

_HOP = {"host", "content-length", "transfer-encoding", "connection"}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    #: What the upstream answered (the body as it streamed, decoded).
    answer: str = ""

    @property
    def rpc_method(self) -> str:
        return str((self.body or {}).get("method", ""))

    @property
    def tool(self) -> str:
        params = (self.body or {}).get("params") or {}
        return str(params.get("name", "")) if self.rpc_method == "tools/call" else ""


@dataclass
class Recorder:
    upstream: str
    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _client: aiohttp.ClientSession | None = None
    _loop: asyncio.AbstractEventLoop = field(init=False)
    _thread: threading.Thread = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Recorder:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            self._client = aiohttp.ClientSession(auto_decompress=False)
            ready.set()

        async def stop() -> None:
            if self._client is not None:
                await self._client.close()
            if self._runner is not None:
                await self._runner.cleanup()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(start())
            loop.run_forever()
            loop.run_until_complete(stop())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="upstream-recorder", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the recorder did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        seen = Seen(
            request.method, request.path_qs, {k.lower(): v for k, v in headers.items()}, body
        )
        self.seen.append(seen)
        async with self._client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=raw or None
        ) as up:
            out = web.StreamResponse(
                status=up.status,
                headers={k: v for k, v in up.headers.items() if k.lower() not in _HOP},
            )
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                seen.answer += chunk.decode(errors="replace")
                await out.write(chunk)
            await out.write_eof()
            return out
