"""The pooled upstream client against a real HTTP server: what it keeps between requests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from sidecar.upstream import Upstream
from tests.harness.peers import free_port

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def cookie_server() -> AsyncIterator[str]:
    """Sets a session cookie on every answer and echoes the Cookie header it received.

    Reached by name: aiohttp's default jar keeps no cookies of IP-address hosts, so
    ``localhost`` is where a shared jar would leak one agent's cookie to the next.
    """

    async def handle(request: web.Request) -> web.Response:
        resp = web.json_response({"cookie": request.headers.get("Cookie", "")})
        resp.set_cookie("upstream_session", "agent-a-secret")
        return resp

    app = web.Application()
    app.router.add_post("/mcp", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "localhost", port).start()
    try:
        yield f"http://localhost:{port}"
    finally:
        await runner.cleanup()


async def test_a_cookie_the_upstream_sets_is_not_sent_with_later_requests(
    cookie_server: str,
) -> None:
    upstream = Upstream(cookie_server, timeout_s=5.0)
    await upstream.start()
    try:
        seen = []
        for _ in range(2):
            async with upstream.request(
                "POST", "/mcp", {"Content-Type": "application/json"}, b"{}"
            ) as r:
                assert "upstream_session" in r.headers.get("Set-Cookie", "")
                seen.append((await r.json())["cookie"])
    finally:
        await upstream.close()

    assert seen == ["", ""]  # the second request (another agent's, maybe) carries nothing
