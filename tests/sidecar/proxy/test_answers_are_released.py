"""A sent answer is not kept: idle keep-alive connections must not pin their last body.

aiohttp's connection loop keeps the last response object of each keep-alive
connection while it waits for the next request; a ``web.Response`` keeps its
body, so 64 idle agents that each fetched a 128 KiB result would pin 8 MB.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.http import send_body


async def test_the_body_is_released_while_the_connection_stays_open() -> None:
    body = b"x" * 200_000 + b"unique"  # one object, large enough for several writes

    async def handler(request: web.Request) -> web.StreamResponse:
        return await send_body(request, 200, body, {"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/", handler)
    baseline = sys.getrefcount(body)
    async with TestServer(app) as server, aiohttp.ClientSession() as http:
        async with http.get(server.make_url("/")) as resp:
            assert resp.status == 200
            assert resp.content_length == len(body)
            assert resp.headers["Content-Type"] == "application/json"
            assert await resp.read() == body
        await asyncio.sleep(0.05)  # the server's connection now waits, idle, for a request
        assert len(server.runner.server.connections) == 1  # type: ignore[union-attr]
        assert sys.getrefcount(body) == baseline
