"""Streamable HTTP (MCP 2025-03-26 .. 2026-07-28): POST, GET and DELETE on the MCP endpoint.

Each handler authenticates, bounds and checks the message (see
:mod:`sidecar.core`), decides ``tools/call``, then forwards and streams the
answer back. SSE answers are cut into events as they arrive; only events that
answer a watched request are parsed and rewritten, the rest pass byte for byte.
A client that goes away cancels the upstream request; an idle stream is closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import cast

import aiohttp
from aiohttp import web

from palisade.policy.types import Decision
from sidecar import gate, jsonrpc
from sidecar.core import CONTENT_METHODS, ProxyCore
from sidecar.http import error_http, forward_headers, response_headers, send_body
from sidecar.identity import AuthError, Principal
from sidecar.jsonrpc import BadMessage, Message
from sidecar.sessions import Pending
from sidecar.sse import EventSplitter, EventTooLarge
from sidecar.upstream import UpstreamError

log = logging.getLogger(__name__)


_NEEDS_VERSION = frozenset({"tools/call", "tools/list"})


def _path_qs(request: web.Request) -> str:
    return request.rel_url.path_qs


class StreamableHandlers:
    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    async def post(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        if core.draining:
            return error_http(
                503, jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, "shutting down")
            )
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        session_id = request.headers.get("Mcp-Session-Id", "")
        try:
            msg = await core.read_message(request)
            session = core.session_for(session_id, principal)
            core.check_headers(msg, request, session)
            if msg.method in _NEEDS_VERSION and not session.server_version:
                await core.ensure_server_version()
            expect: tuple[object, Pending] | None = None
            if core.decides(msg):
                verdict, pending = await core.decide(msg, principal, session_id, session)
                if not verdict.allowed:
                    core.metrics.count_request(msg.method, str(verdict.decision))
                    retry = {"Retry-After": str(max(1, math.ceil(verdict.retry_after_s)))}
                    return error_http(
                        200,
                        gate.verdict_error(msg.id, verdict, pending.tool),
                        headers=retry if verdict.decision is Decision.THROTTLE else None,
                    )
                if core.watches_call(pending):
                    expect = (msg.id, pending)
            else:
                if msg.method in CONTENT_METHODS and msg.is_request:
                    await core.audit_read(msg, principal, session_id)
                p = core.pending_for(msg, principal)
                if p is not None:
                    expect = (msg.id, p)
        except BadMessage as exc:
            return core.bad_input(exc, principal, session_id)
        if expect is not None and session_id:
            session.remember(msg.id, expect[1])
        core.metrics.count_request(msg.method, "forwarded")
        return await self._forward(request, msg, principal, session_id, expect)

    async def _forward(
        self,
        request: web.Request,
        msg: Message,
        principal: Principal,
        session_id: str,
        expect: tuple[object, Pending] | None,
    ) -> web.StreamResponse:
        core = self.core
        body = jsonrpc.dumps(msg.body)
        headers = forward_headers(request.headers)
        core.metrics.in_flight.inc()
        answered = False
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            async with core.upstream.request("POST", _path_qs(request), headers, body) as up:
                core.metrics.upstream_seconds.observe(loop.time() - t0)
                ctype = up.headers.get("Content-Type", "")
                out_headers = response_headers(up.headers)
                if ctype.startswith("text/event-stream"):
                    answered = True  # from here on the stream cancels upstream work itself
                    return await self._stream(
                        request, up, out_headers, session_id, principal, expect, msg
                    )
                limit = core.settings.limits.max_inspect_bytes
                async with asyncio.timeout(core.settings.limits.upstream_timeout_s):
                    # StreamReader.read(n) returns what has arrived, not n bytes: loop
                    # to EOF (or past the limit), else large answers are cut short.
                    parts: list[bytes] = []
                    size = 0
                    while size <= limit:
                        part = await up.content.read(limit + 1 - size)
                        if not part:
                            break
                        parts.append(part)
                        size += len(part)
                    data = b"".join(parts)
                    parts.clear()  # the chunks are not kept while the answer is sent
                if len(data) > limit:
                    raise BadMessage(
                        jsonrpc.LIMIT_EXCEEDED,
                        f"the upstream answer exceeds {limit} bytes",
                        502,
                        msg.id,
                    )
                new_sid = up.headers.get("Mcp-Session-Id", "")
                if expect is not None and ctype.startswith("application/json") and data:
                    data = await self._rewrite_json(data, expect, session_id, principal, new_sid)
                answered = True
                status = up.status
        except UpstreamError as exc:
            answered = True
            if exc.timeout:
                core.cancel_upstream(msg.id, request.headers, _path_qs(request), "upstream timeout")
            status = 504 if exc.timeout else 502
            return error_http(
                status, jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason)
            )
        except TimeoutError:
            answered = True
            core.cancel_upstream(msg.id, request.headers, _path_qs(request), "upstream timeout")
            return error_http(
                504,
                jsonrpc.error_response(
                    msg.id,
                    jsonrpc.UPSTREAM_UNAVAILABLE,
                    "the upstream answer did not complete in time",
                ),
            )
        except BadMessage as exc:
            answered = True
            return error_http(
                exc.http_status, jsonrpc.error_response(msg.id, exc.code, exc.message)
            )
        finally:
            core.metrics.in_flight.dec()
            if not answered and msg.is_request:
                core.cancel_upstream(
                    msg.id, request.headers, _path_qs(request), "client disconnected"
                )
        # sent once the upstream connection is back in the pool
        return await send_body(request, status, data, out_headers)

    async def _rewrite_json(
        self,
        data: bytes,
        expect: tuple[object, Pending],
        session_id: str,
        principal: Principal,
        new_sid: str,
    ) -> bytes:
        try:
            doc, standard = jsonrpc.loads_answer(data)
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict):
            # Not one JSON-RPC message (not JSON, or a batch nothing asked for), so
            # not inspectable: withheld (a lenient client could still read a secret
            # out of it), and the caller learns why.
            log.warning("upstream answer is not a JSON-RPC object; withheld")
            return jsonrpc.dumps(
                jsonrpc.error_response(
                    cast(jsonrpc.RequestId, expect[0]),
                    jsonrpc.UPSTREAM_UNAVAILABLE,
                    "the upstream answer is not a JSON-RPC object; it was withheld",
                )
            )
        if doc.get("id") == expect[0]:
            doc = await self.core.rewrite_result(expect[1], doc, session_id, principal, new_sid)
        return jsonrpc.dumps_answer(doc, standard)  # what was inspected, not ``data``

    async def _stream(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: dict[str, str],
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        msg: Message | None,
    ) -> web.StreamResponse:
        """Relay an SSE answer event by event (POST streams) or chunk by chunk."""
        core = self.core
        # an initialize answer names the new session: bind it to this agent at once
        new_session = up.headers.get("Mcp-Session-Id", "") if not session_id else ""
        limits = core.settings.limits
        resp = web.StreamResponse(status=up.status, headers=headers)
        await resp.prepare(request)
        inspect = expect is not None or msg is None  # GET streams: look up the session
        splitter = EventSplitter(limits.max_inspect_bytes) if inspect else None
        completed = False
        resumable = False
        try:
            while True:
                try:
                    async with asyncio.timeout(limits.idle_stream_timeout_s):
                        chunk = await up.content.readany()
                except TimeoutError:
                    log.info("closing idle stream", extra={"session": session_id})
                    if msg is not None and msg.id is not None:
                        err = jsonrpc.error_response(
                            msg.id,
                            jsonrpc.LIMIT_EXCEEDED,
                            f"stream idle for {limits.idle_stream_timeout_s:g}s; closed",
                        )
                        await resp.write(b"event: message\ndata: " + jsonrpc.dumps(err) + b"\n\n")
                        core.cancel_upstream(
                            msg.id, request.headers, _path_qs(request), "idle stream"
                        )
                    completed = True
                    break
                if not chunk:
                    completed = True
                    break
                if not resumable and b"id:" in chunk:
                    resumable = True
                if splitter is None:
                    await resp.write(chunk)
                    continue
                for raw in splitter.feed(chunk):
                    await resp.write(
                        await core.rewrite_event(raw, session_id, principal, expect, new_session)
                    )
            if splitter is not None and splitter.rest():
                # an event cut off by the end of the stream: clients discard it (SSE),
                # and it was never inspected, so it is not forwarded either
                log.warning("upstream SSE stream ended inside an event; the partial event dropped")
            await resp.write_eof()
        except EventTooLarge as exc:
            completed = True
            log.warning("closing stream: %s", exc)
            if msg is not None:
                core.cancel_upstream(msg.id, request.headers, _path_qs(request), "event too large")
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            pass  # client or upstream went away; the finally below tells the upstream
        finally:
            if not completed and msg is not None and msg.is_request:
                core.cancel_upstream(
                    msg.id,
                    request.headers,
                    _path_qs(request),
                    "client disconnected",
                    session_id=session_id,
                    delay_s=limits.resume_grace_s if resumable and session_id else 0.0,
                )
        return resp

    async def get(self, request: web.Request) -> web.StreamResponse:
        """A GET stream (server-initiated messages, or resumption with Last-Event-ID)."""
        core = self.core
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        session_id = request.headers.get("Mcp-Session-Id", "")
        try:
            core.session_for(session_id, principal)
        except BadMessage as exc:
            return core.bad_input(exc, principal, session_id)
        resuming = bool(request.headers.get("Last-Event-ID"))
        if session_id and resuming:
            core.resumed(session_id)
        core.metrics.count_request("GET", "forwarded")
        task = asyncio.current_task()
        if task is not None and not resuming:
            core.listening.add(task)  # closed at shutdown: a client reconnects elsewhere
        try:
            async with core.upstream.request(
                "GET", _path_qs(request), forward_headers(request.headers)
            ) as up:
                headers = response_headers(up.headers)
                if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                    return await self._stream(
                        request, up, headers, session_id, principal, None, None
                    )
                return web.Response(status=up.status, body=await up.read(), headers=headers)
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )
        finally:
            if task is not None:
                core.listening.discard(task)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """End a session upstream; forget it here once the upstream agreed."""
        core = self.core
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        session_id = request.headers.get("Mcp-Session-Id", "")
        try:
            core.session_for(session_id, principal)
        except BadMessage as exc:
            return core.bad_input(exc, principal, session_id)
        core.metrics.count_request("DELETE", "forwarded")
        try:
            async with core.upstream.request(
                "DELETE", _path_qs(request), forward_headers(request.headers)
            ) as up:
                body = await up.read()
                if up.status < 300 and session_id:
                    core.sessions.drop(session_id)
                    if core.outputs is not None:
                        core.outputs.end_session(principal.agent, session_id)
                return web.Response(
                    status=up.status, body=body, headers=response_headers(up.headers)
                )
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )
