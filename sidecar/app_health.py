"""Kubelet probes of the MCP container, answered through the sidecar.

In a pod with the Palisade packet filter (``palisade pod-firewall``), the MCP
container's port refuses every connection that does not come from loopback, and
the kubelet's probes come from the node. The injector therefore rewrites each
``httpGet`` / ``tcpSocket`` probe (and ``httpGet`` lifecycle hook) of that
container that targets a protected port into an ``httpGet`` on the sidecar's
port, path ``/palisade/app-health/<container>/<probe>``, and hands the sidecar
the original probes (``--app-probes``, JSON). The sidecar performs the original
check on ``127.0.0.1`` and answers 200 (the check held) or 503 (it did not).

Never an open proxy: the target of every check is fixed when the sidecar starts
(port, path, scheme, headers from the injector); a request names only which of
those declared probes to run, and an unknown name is 404. The host is always
127.0.0.1. As the kubelet does, HTTPS is not verified and a status from 200 to 399
is success; redirects are not followed (a 3xx is success).

Format of ``--app-probes`` (what injector/probes.py writes)::

    {"<container>/<probe>": {"httpGet": {"path": "/healthz", "port": 8080,
                                        "scheme": "HTTP",
                                        "httpHeaders": [{"name": "X", "value": "y"}]},
                             "timeoutSeconds": 1},
     "<container>/<probe>": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1}}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

log = logging.getLogger(__name__)

#: The route prefix; the rest of the path is ``<container>/<probe>``.
PREFIX = "/palisade/app-health"
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?/[A-Za-z]{1,32}$")
_MAX_TIMEOUT_S = 60.0


class ProbeConfigError(ValueError):
    """``--app-probes`` is not what the injector writes."""


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """GET ``scheme://127.0.0.1:port/path`` with these headers; 200..399 holds."""

    port: int
    path: str = "/"
    scheme: str = "http"
    headers: tuple[tuple[str, str], ...] = ()
    timeout_s: float = 1.0


@dataclass(frozen=True, slots=True)
class TcpCheck:
    """A TCP connect to ``127.0.0.1:port`` holds."""

    port: int
    timeout_s: float = 1.0


Check = HttpCheck | TcpCheck


def _port(value: object, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ProbeConfigError(f"probe {key}: port must be a number from 1 to 65535")
    return value


def _timeout(doc: Mapping[str, Any], key: str) -> float:
    raw = doc.get("timeoutSeconds", 1)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or raw <= 0:
        raise ProbeConfigError(f"probe {key}: timeoutSeconds must be a positive number")
    return min(float(raw), _MAX_TIMEOUT_S)


def _http(spec: Mapping[str, Any], key: str, timeout_s: float) -> HttpCheck:
    path = spec.get("path", "/") or "/"
    if not isinstance(path, str) or not path.startswith("/") or not path.isprintable():
        raise ProbeConfigError(f"probe {key}: path must start with / and be printable")
    if any(c.isspace() for c in path):
        raise ProbeConfigError(f"probe {key}: path must not contain spaces")
    scheme = str(spec.get("scheme") or "HTTP").lower()
    if scheme not in ("http", "https"):
        raise ProbeConfigError(f"probe {key}: scheme must be HTTP or HTTPS")
    headers: list[tuple[str, str]] = []
    for item in spec.get("httpHeaders") or []:
        name = item.get("name") if isinstance(item, dict) else None
        value = item.get("value", "") if isinstance(item, dict) else None
        if not isinstance(name, str) or not _TOKEN.match(name) or not isinstance(value, str):
            raise ProbeConfigError(f"probe {key}: a header has no valid name and value")
        if any(c in value for c in "\r\n\0"):
            raise ProbeConfigError(f"probe {key}: header {name} has a line break")
        headers.append((name, value))
    return HttpCheck(_port(spec.get("port"), key), path, scheme, tuple(headers), timeout_s)


def parse(text: str) -> dict[str, Check]:
    """The declared checks, by ``<container>/<probe>``; "" means none."""
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        raise ProbeConfigError("--app-probes is not JSON") from None
    if not isinstance(doc, dict):
        raise ProbeConfigError("--app-probes must be a JSON object")
    checks: dict[str, Check] = {}
    for key, body in doc.items():
        if not isinstance(key, str) or not _NAME.match(key) or not isinstance(body, dict):
            raise ProbeConfigError(f"probe {key!r}: not <container>/<probe> with an object")
        timeout_s = _timeout(body, key)
        if isinstance(body.get("httpGet"), dict):
            checks[key] = _http(body["httpGet"], key, timeout_s)
        elif isinstance(body.get("tcpSocket"), dict):
            checks[key] = TcpCheck(_port(body["tcpSocket"].get("port"), key), timeout_s)
        else:
            raise ProbeConfigError(f"probe {key}: needs httpGet or tcpSocket")
    return checks


class AppHealth:
    """The ``GET /palisade/app-health/{container}/{probe}`` handler."""

    def __init__(self, checks: Mapping[str, Check], host: str = "127.0.0.1") -> None:
        self.checks = dict(checks)
        self._host = host
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def handle(self, request: web.Request) -> web.Response:
        key = f"{request.match_info['container']}/{request.match_info['probe']}"
        check = self.checks.get(key)
        if check is None:
            return web.json_response({"error": "no such probe"}, status=404)
        ok, detail = await self.run(check)
        return web.json_response({"ok": ok, "detail": detail}, status=200 if ok else 503)

    async def run(self, check: Check) -> tuple[bool, str]:
        """Run one declared check; (held, what happened)."""
        if isinstance(check, TcpCheck):
            return await self._tcp(check)
        return await self._http(check)

    async def _tcp(self, check: TcpCheck) -> tuple[bool, str]:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self._host, check.port), check.timeout_s
            )
        except (OSError, TimeoutError) as exc:
            return False, f"tcp connect failed: {type(exc).__name__}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True, "tcp connect held"

    async def _http(self, check: HttpCheck) -> tuple[bool, str]:
        if self._session is None:
            # No cookies kept between probes, no proxies from the environment.
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
            )
        url = URL(f"{check.scheme}://{self._host}:{check.port}{check.path}", encoded=True)
        headers = {"User-Agent": "kube-probe/palisade", "Accept": "*/*"}
        headers.update(dict(check.headers))
        try:
            async with self._session.get(
                url,
                headers=headers,
                allow_redirects=False,
                ssl=False,  # as the kubelet: probes do not verify certificates
                timeout=aiohttp.ClientTimeout(total=check.timeout_s),
            ) as resp:
                await resp.content.read(4096)  # like the kubelet, read a little, then stop
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return False, f"http get failed: {type(exc).__name__}"
        return 200 <= status < 400, f"http status {status}"


def add_routes(app: web.Application, health: AppHealth) -> None:
    """Mount the route and close the client with the application."""
    app.router.add_get(PREFIX + "/{container}/{probe}", health.handle)

    async def on_cleanup(_: web.Application) -> None:
        await health.close()

    app.on_cleanup.append(on_cleanup)
