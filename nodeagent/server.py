"""HTTP endpoints: ``/healthz``, ``/readyz``, ``/status`` (JSON) and ``/metrics``.

``/healthz`` is 200 while the loop runs (a node with no GPU is healthy);
``/readyz`` is 200 once a first sample was taken; ``/status`` is the document of
:mod:`nodeagent.status`; ``/metrics`` is Prometheus text from
:mod:`nodeagent.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodeagent.metrics import registry_for

if TYPE_CHECKING:
    from nodeagent.agent import Agent


def make_app(agent: Agent) -> web.Application:
    registry = registry_for(agent)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"health": agent.health()})

    async def readyz(_: web.Request) -> web.Response:
        body = {"ready": agent.ready, "mode": agent.backend.mode.value}
        return web.json_response(body, status=200 if agent.ready else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(agent.status())

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def start(agent: Agent, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve on ``host:port`` (0 picks a free port); returns the runner and the port."""
    runner = web.AppRunner(make_app(agent), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, int(bound)
