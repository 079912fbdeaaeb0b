"""Kubelet probes of the MCP container, rerouted through the sidecar: from the injector's
patch to the sidecar's route, against a real HTTP server on loopback.

The injector writes the probe table (``PALISADE_APP_PROBES``) and points the probes
at ``/palisade/app-health/<container>/<probe>`` on the sidecar's port; the sidecar
(sidecar/app_health.py) runs exactly the declared check on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from injector import admission
from injector.review import decode_patch
from injector.settings import InjectionSettings
from sidecar.app_health import AppHealth, ProbeConfigError, add_routes, parse
from tests.harness.peers import free_port
from tests.injector.pods import ENABLED, apply_patch, container, pod, review

REGULAR = InjectionSettings(native_sidecar="never")


class App:
    """The MCP container's health endpoint: a real server whose answer we choose."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[dict[str, Any]] = []

    async def health(self, request: web.Request) -> web.Response:
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers)})
        return web.Response(status=self.status, text="app says hi")


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def injected(app_port: int, **probes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The patched MCP container and the sidecar, for a pod with these probes."""
    obj = pod(container("server", ("mcp", app_port), ("metrics", 9090), **probes))
    patched = apply_patch(obj, decode_patch(admission.serve(review(obj), ENABLED, REGULAR)))
    app, sidecar = patched["spec"]["containers"]
    assert sidecar["name"] == "palisade-sidecar"
    return app, sidecar


def env_of(sidecar: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[App, int]]:
    state, port = App(), free_port()
    application = web.Application()
    application.router.add_get("/health", state.health)
    runner = await serve(application, port)
    try:
        yield state, port
    finally:
        await runner.cleanup()


async def test_the_rerouted_probes_reach_the_real_app_through_the_sidecar_route(
    upstream: tuple[App, int],
) -> None:
    state, app_port = upstream
    app, sidecar = injected(
        app_port,
        livenessProbe={
            "httpGet": {
                "path": "/health?deep=1",
                "port": "mcp",
                "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}],
            },
            "timeoutSeconds": 2,
        },
        readinessProbe={"tcpSocket": {"port": app_port}},
        startupProbe={"httpGet": {"path": "/metrics", "port": "metrics"}},  # not protected
    )
    sidecar_port = sidecar["ports"][0]["containerPort"]
    assert app["livenessProbe"] == {
        "httpGet": {
            "path": "/palisade/app-health/server/livenessProbe",
            "port": sidecar_port,
            "scheme": "HTTP",
        },
        "timeoutSeconds": 2,
    }
    assert app["readinessProbe"]["httpGet"]["path"] == "/palisade/app-health/server/readinessProbe"
    assert "tcpSocket" not in app["readinessProbe"]
    assert app["startupProbe"] == {"httpGet": {"path": "/metrics", "port": "metrics"}}

    health = AppHealth(parse(env_of(sidecar)["PALISADE_APP_PROBES"]))
    assert sorted(health.checks) == ["server/livenessProbe", "server/readinessProbe"]
    probe_app = web.Application()
    add_routes(probe_app, health)
    port = free_port()
    runner = await serve(probe_app, port)
    base = f"http://127.0.0.1:{port}/palisade/app-health/server"
    try:
        async with aiohttp.ClientSession() as http:

            async def get(name: str) -> int:
                async with http.get(f"{base}/{name}") as resp:
                    return resp.status

            assert await get("livenessProbe") == 200
            assert state.seen[-1]["path"] == "/health?deep=1"
            assert state.seen[-1]["headers"]["X-Probe"] == "kubelet"
            assert state.seen[-1]["headers"]["Host"] == f"127.0.0.1:{app_port}"
            assert await get("readinessProbe") == 200
            state.status = 500
            assert await get("livenessProbe") == 503
            state.status = 302  # the kubelet counts a redirect as success; not followed
            assert await get("livenessProbe") == 200
            # only declared probes: nothing else is reachable through the route
            assert await get("startupProbe") == 404
            async with http.get(f"http://127.0.0.1:{port}/palisade/app-health/x/y") as resp:
                assert resp.status == 404
    finally:
        await runner.cleanup()


async def test_a_probe_fails_when_the_app_is_down() -> None:
    health = AppHealth(
        parse(json.dumps({"a/livenessProbe": {"httpGet": {"port": free_port(), "path": "/"}}}))
    )
    assert (await health.run(health.checks["a/livenessProbe"]))[0] is False
    tcp = AppHealth(parse(json.dumps({"a/readinessProbe": {"tcpSocket": {"port": free_port()}}})))
    assert (await tcp.run(tcp.checks["a/readinessProbe"]))[0] is False
    await health.close()


@pytest.mark.parametrize(
    "table",
    [
        "not json",
        "[]",
        '{"a/livenessProbe": {"exec": {"command": ["sh"]}}}',
        '{"a/livenessProbe": {"httpGet": {"port": 0}}}',
        '{"a/livenessProbe": {"httpGet": {"port": 80, "path": "no-slash"}}}',
        '{"a/livenessProbe": {"httpGet": {"port": 80, "scheme": "ftp"}}}',
        '{"a/livenessProbe": {"httpGet": {"port": 80, "httpHeaders": [{"name": "X", '
        '"value": "a\\r\\nInjected: 1"}]}}}',
        '{"../../etc": {"tcpSocket": {"port": 80}}}',
    ],
)
def test_the_sidecar_refuses_a_probe_table_it_did_not_expect(table: str) -> None:
    with pytest.raises(ProbeConfigError):
        parse(table)


def test_every_table_the_injector_writes_is_one_the_sidecar_reads() -> None:
    probe = {"httpGet": {"path": "/h", "port": "mcp", "scheme": "HTTPS"}, "timeoutSeconds": 3}
    hook = {"preStop": {"httpGet": {"path": "/drain", "port": 8080}}}
    _, sidecar = injected(8080, livenessProbe=probe, lifecycle=hook)
    checks = parse(env_of(sidecar)["PALISADE_APP_PROBES"])
    assert set(checks) == {"server/livenessProbe", "server/preStop"}
    live = checks["server/livenessProbe"]
    assert (getattr(live, "scheme", None), live.timeout_s) == ("https", 3.0)
