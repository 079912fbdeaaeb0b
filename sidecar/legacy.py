"""The legacy HTTP+SSE transport (MCP 2024-11-05): ``GET /sse`` and ``POST /messages/``.

In this transport every answer travels on the client's one SSE stream, not in
the POST's response. So the proxy owns that stream: it relays the upstream's
events (rewriting answers it watches, by request id) and merges in the answers
it gives itself (denials, bad input), then acknowledges the POST with 202 as the
upstream would. The ``endpoint`` event is rewritten to a relative URL so the
client keeps talking to the proxy.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from sidecar import gate, jsonrpc
from sidecar.core import CONTENT_METHODS, ProxyCore
from sidecar.http import error_http, forward_headers, response_headers
from sidecar.identity import AuthError, Principal
from sidecar.jsonrpc import BadMessage
from sidecar.sse import Event, EventSplitter, EventTooLarge, encode_event, parse_event
from sidecar.upstream import UpstreamError

log = logging.getLogger(__name__)


def _key(session_id: str) -> str:
    return "sse:" + session_id


def _event_bytes(doc: dict[str, object]) -> bytes:
    return encode_event(Event(jsonrpc.dumps(doc).decode("utf-8"), event="message"))


class LegacyHandlers:
    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    async def stream(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        try:
            async with core.upstream.request(
                "GET", request.rel_url.path_qs, forward_headers(request.headers)
            ) as up:
                if not up.headers.get("Content-Type", "").startswith("text/event-stream"):
                    return web.Response(
                        status=up.status, body=await up.read(), headers=response_headers(up.headers)
                    )
                resp = web.StreamResponse(status=up.status, headers=response_headers(up.headers))
                await resp.prepare(request)
                await self._relay(up, resp, principal)
                return resp
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )

    async def _relay(
        self, up: aiohttp.ClientResponse, resp: web.StreamResponse, principal: Principal
    ) -> None:
        core = self.core
        limits = core.settings.limits
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        sid: list[str] = []

        async def pump() -> None:
            splitter = EventSplitter(limits.max_inspect_bytes)
            try:
                while chunk := await up.content.readany():
                    for raw in splitter.feed(chunk):
                        if not sid:
                            raw = self._endpoint(raw, principal, queue, sid)
                        else:
                            raw = await core.rewrite_event(raw, _key(sid[0]), principal, None)
                        await queue.put(raw)
            except (EventTooLarge, aiohttp.ClientError) as exc:
                log.warning("legacy SSE stream from upstream ended: %s", exc)
            finally:
                await queue.put(None)

        task = asyncio.get_running_loop().create_task(pump())
        try:
            while True:
                try:
                    async with asyncio.timeout(limits.idle_stream_timeout_s):
                        item = await queue.get()
                except TimeoutError:
                    log.info("closing idle legacy SSE stream")
                    break
                if item is None:
                    break
                await resp.write(item)
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            pass
        finally:
            task.cancel()
            if sid:
                core.sessions.drop(_key(sid[0]))
                if core.outputs is not None:
                    core.outputs.end_session(principal.agent, _key(sid[0]))

    def _endpoint(
        self,
        raw: bytes,
        principal: Principal,
        queue: asyncio.Queue[bytes | None],
        sid: list[str],
    ) -> bytes:
        """Bind the session named by the ``endpoint`` event; make its URL relative."""
        ev = parse_event(raw)
        if ev is None or ev.event != "endpoint":
            return raw
        url = urlsplit(ev.data.strip())
        ids = parse_qs(url.query).get("session_id") or parse_qs(url.query).get("sessionId")
        if not ids:
            return raw
        sid.append(ids[0])
        session = self.core.session_for(_key(ids[0]), principal)
        session.inject = queue
        rel = url.path + ("?" + url.query if url.query else "")
        return encode_event(Event(rel, event="endpoint", id=ev.id, retry=ev.retry))

    async def message(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        sid = request.query.get("session_id") or request.query.get("sessionId") or ""
        key = _key(sid)
        try:
            msg = await core.read_message(request)
            existing = core.sessions.peek(key)
            if existing is None or existing.inject is None:
                raise BadMessage(
                    jsonrpc.INVALID_REQUEST, "Unknown or closed SSE session", 404, msg.id
                )
            session = core.session_for(key, principal)
            core.check_headers(msg, request, session)
            if msg.method in ("tools/call", "tools/list") and not session.server_version:
                await core.ensure_server_version()
            if core.decides(msg):
                verdict, pending = await core.decide(msg, principal, key, session)
                if not verdict.allowed:
                    core.metrics.count_request(msg.method, str(verdict.decision))
                    await existing.inject.put(
                        _event_bytes(gate.verdict_error(msg.id, verdict, pending.tool))
                    )
                    return web.Response(status=202, text="Accepted")
                if core.watches_call(pending):
                    session.remember(msg.id, pending)
            else:
                if msg.method in CONTENT_METHODS and msg.is_request:
                    await core.audit_read(msg, principal, key)
                if (p := core.pending_for(msg, principal)) is not None:
                    session.remember(msg.id, p)
        except BadMessage as exc:
            return core.bad_input(exc, principal, key)
        core.metrics.count_request(msg.method, "forwarded")
        try:
            async with core.upstream.request(
                "POST",
                request.rel_url.path_qs,
                forward_headers(request.headers),
                jsonrpc.dumps(msg.body),
            ) as up:
                return web.Response(
                    status=up.status, body=await up.read(), headers=response_headers(up.headers)
                )
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )
