"""/readyz and /metrics need no token; however many ask at once, the upstream is probed
at most about once a second (a flood of probes never becomes a flood upstream)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.harness.peers import free_port
from tests.sidecar.proxy.conftest import run_sidecar


async def test_a_flood_of_readiness_and_metrics_probes_reaches_the_upstream_once(
    tmp_path: Path,
) -> None:
    probes: list[float] = []

    async def mcp_get(_: web.Request) -> web.Response:
        probes.append(asyncio.get_running_loop().time())
        return web.Response(status=405)

    app = web.Application()
    app.router.add_get("/mcp", mcp_get)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with (
            run_sidecar(f"http://127.0.0.1:{port}", tmp_path) as sc,
            aiohttp.ClientSession() as http,
        ):

            async def get(path: str) -> int:
                async with http.get(sc.base + path) as r:
                    await r.read()
                    return r.status

            paths = ["/readyz", "/metrics"] * 100
            statuses = await asyncio.gather(*(get(p) for p in paths))
            assert set(statuses) == {200}
            assert len(probes) == 1, f"{len(probes)} upstream probes for {len(paths)} asks"
            await asyncio.sleep(1.1)  # a second later the next ask probes again
            assert await get("/readyz") == 200
            assert len(probes) == 2
    finally:
        await runner.cleanup()
