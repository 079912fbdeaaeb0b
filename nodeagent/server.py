"""HTTP endpoints: ``/healthz``, ``/readyz``, ``/status`` (JSON), ``/metrics``, ``/attribution``.

``/healthz`` is 200 while the loop runs (a node with no GPU is healthy);
``/readyz`` is 200 once a first sample was taken; ``/status`` is the document of
:mod:`nodeagent.status`; ``/metrics`` is Prometheus text from
:mod:`nodeagent.metrics`; ``/attribution?pid=N`` says who a host PID belongs to
(read-only: one bounded read of ``/proc/N/cgroup`` joined with the live pod list):
200 with the owner (a pod, or a host process), 400 for a malformed PID, 404 for
a PID with no process.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nodeagent.cgroup import ProcCgroupReader
from nodeagent.metrics import registry_for

if TYPE_CHECKING:
    from nodeagent.agent import Agent

#: The kernel's ceiling for ``pid_max`` on 64-bit (PID_MAX_LIMIT, 2**22).
PID_MAX = 4_194_304
_DIGITS = re.compile(r"[0-9]{1,7}")


class BadPid(ValueError):
    """The ``pid`` parameter is not one host PID."""


def parse_pid(values: list[str]) -> int:
    """The one ``pid`` query value as a PID, or :class:`BadPid` saying what is wrong."""
    if not values:
        raise BadPid("missing query parameter pid (GET /attribution?pid=N)")
    if len(values) > 1:
        raise BadPid("give one pid per request")
    raw = values[0].strip()
    if not _DIGITS.fullmatch(raw):
        raise BadPid(f"pid must be a decimal integer from 1 to {PID_MAX}, got {raw[:32]!r}")
    pid = int(raw)
    if not 1 <= pid <= PID_MAX:
        raise BadPid(f"pid must be a decimal integer from 1 to {PID_MAX}, got {pid}")
    return pid


def attribution_document(agent: Agent, pid: int, text: str | None) -> dict[str, Any]:
    """The ``/attribution`` body for a PID whose cgroup file reads ``text``."""
    doc = agent.owner_of(pid, text).to_json()
    doc["node"] = agent.settings.node
    doc["podListSynced"] = agent.pods.synced
    doc["cgroupNamespacePrivate"] = agent.cgroup_ns.private
    doc["gpu"] = [
        {
            "uuid": p.gpu_uuid,
            "index": p.gpu_index,
            "giId": p.gi_id,
            "profile": p.profile,
            "usedMemoryBytes": p.used_memory_bytes,
        }
        for p in agent.attributed
        if p.pid == pid
    ]
    return doc


def make_app(agent: Agent) -> web.Application:
    registry = registry_for(agent)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"health": agent.health()})

    async def readyz(_: web.Request) -> web.Response:
        body = {"ready": agent.ready, "mode": agent.backend.mode.value}
        return web.json_response(body, status=200 if agent.ready else 503)

    async def status(_: web.Request) -> web.Response:
        return web.json_response(agent.status())

    async def attribution(request: web.Request) -> web.Response:
        try:
            pid = parse_pid(request.query.getall("pid", []))
        except BadPid as exc:
            return web.json_response({"error": str(exc)}, status=400)
        text = agent.cgroups.read(pid)  # one small, bounded read of a procfs file
        if text is None:
            if isinstance(agent.cgroups, ProcCgroupReader) and agent.cgroups.exists(pid):
                error = f"process {pid} exists but its cgroup file cannot be read"
                return web.json_response({"error": error, "pid": pid}, status=403)
            return web.json_response(
                {"error": f"no process {pid} on this node", "pid": pid}, status=404
            )
        return web.json_response(attribution_document(agent, pid, text))

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/attribution", attribution)
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
