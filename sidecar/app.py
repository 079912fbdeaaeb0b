"""The sidecar's aiohttp application: MCP routes, probes, metrics, protected-resource metadata.

``build_app(core)`` wires :class:`~sidecar.core.ProxyCore` into routes:

====================================  =============================================
``POST|GET|DELETE <mcp_path>``        Streamable HTTP (2025-03-26 .. 2026-07-28)
``GET <sse_path>``                    legacy HTTP+SSE stream (2024-11-05)
``POST <messages_paths>``             legacy HTTP+SSE messages
``GET /healthz``                      alive
``GET /readyz``                       a verified bundle is active and the upstream answers
                                      (and, with a distributor, its client is ``OK``)
``GET /metrics``                      Prometheus text format
``GET /palisade/app-health/<c>/<p>``  the MCP container's declared kubelet probe ``p``
                                      of container ``c``, run on 127.0.0.1 (app_health.py)
``GET /.well-known/oauth-protected-resource``  RFC 9728 metadata (from identity)
====================================  =============================================

Every request first passes :func:`sidecar.edge.edge_middleware` (HTTP bounds, one
value per identity, session and routing field), and the request handler logs
parser errors through :class:`sidecar.edge.ParserErrorAudit`: whatever is
refused, before routing or inside the HTTP parser, leaves an audit record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.app_health import AppHealth, add_routes
from sidecar.core import ProxyCore
from sidecar.edge import edge_middleware, handler_args
from sidecar.legacy import LegacyHandlers
from sidecar.streamable import StreamableHandlers

CORE_KEY: web.AppKey[ProxyCore] = web.AppKey("palisade_core", ProxyCore)
#: The upstream is probed for readiness at most this often (seconds).
PROBE_EVERY_S = 1.0


#: Extra readiness from outside the proxy (the fleet link): problems, and a status document.
Readiness = Callable[[], tuple[list[str], dict[str, Any]]]


def build_app(
    core: ProxyCore,
    *,
    readiness: Readiness | None = None,
    app_health: AppHealth | None = None,
) -> web.Application:
    s = core.settings
    app = web.Application(
        client_max_size=s.limits.max_body_bytes + 1,
        middlewares=[edge_middleware(core)],
        # override what any runner passes: the parser's limits and its error log
        handler_args=handler_args(core),
    )
    app[CORE_KEY] = core
    sh = StreamableHandlers(core)
    lh = LegacyHandlers(core)
    app.router.add_post(s.mcp_path, sh.post)
    app.router.add_get(s.mcp_path, sh.get, allow_head=False)
    app.router.add_delete(s.mcp_path, sh.delete)
    app.router.add_get(s.sse_path, lh.stream, allow_head=False)
    for path in s.messages_paths:
        app.router.add_post(path, lh.message)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    probed: list[float | bool] = [float("-inf"), False]  # when, and what the upstream said
    probe_lock = asyncio.Lock()

    async def upstream_answers() -> bool:
        """The upstream probe, at most once a second however many ask (/readyz, /metrics):
        a flood of unauthenticated probes never becomes a flood upstream."""
        async with probe_lock:
            now = time.monotonic()
            if now - float(probed[0]) >= PROBE_EVERY_S:
                probed[1] = await core.upstream.answers(s.mcp_path)
                probed[0] = time.monotonic()
            return bool(probed[1])

    async def readiness_report() -> tuple[list[str], dict[str, Any]]:
        snap = core.policy.snapshot
        problems = []
        if core.draining:
            problems.append("shutting down")
        if snap is None:
            problems.append("no verified bundle is active")
        if not await upstream_answers():
            problems.append("the upstream MCP server does not answer")
        extra: dict[str, Any] = {}
        if readiness is not None:
            more, extra["distributor"] = readiness()
            problems.extend(more)
        return problems, extra

    async def readyz(_: web.Request) -> web.Response:
        problems, extra = await readiness_report()
        snap = core.policy.snapshot
        doc = {
            "ready": not problems,
            "problems": problems,
            "bundle_revision": snap.revision if snap else None,
            "bundle_digest": snap.digest if snap else None,
            **extra,
        }
        return web.json_response(doc, status=200 if not problems else 503)

    async def metrics(_: web.Request) -> web.Response:
        problems, _extra = await readiness_report()
        core.metrics.ready.set(0 if problems else 1)
        body = generate_latest(core.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def resource_metadata(_: web.Request) -> web.Response:
        return web.json_response(core.authenticator.protected_resource_metadata())

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/.well-known/oauth-protected-resource", resource_metadata)
    app.router.add_get("/.well-known/oauth-protected-resource" + s.mcp_path, resource_metadata)
    if app_health is not None and app_health.checks:
        add_routes(app, app_health)

    async def on_startup(_: web.Application) -> None:
        await core.upstream.start()

    async def on_cleanup(_: web.Application) -> None:
        for task in list(core.background):
            task.cancel()
        await core.upstream.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
