"""The legacy HTTP+SSE transport (MCP 2024-11-05): ``GET /sse`` and ``POST /messages/``.

In this transport every answer travels on the client's one SSE stream, not in
the POST's response. So the proxy owns that stream: it relays the upstream's
events (every one parsed, matched to the request it answers, rewritten when
watched, re-encoded; what matches no request is withheld) and merges in the
answers it gives itself (denials, bad input, calls the upstream left
unanswered), then acknowledges the POST with 202 as the upstream would.

The upstream's first ``endpoint`` event names the session: it is bound to the
principal that opened the stream (an id the upstream already gave another
principal ends the stream), and rewritten to a relative URL so the client keeps
talking to the proxy. A message for any other session is refused (404, or 403
when it is someone else's).

A decided call left unanswered for ``upstream_timeout_s`` (no message on the
stream in that time) is answered with a JSON-RPC error; so are those still open
when the upstream's stream ends. Each one's outcome is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from sidecar import gate, jsonrpc
from sidecar.core import (
    CLIENT_GONE,
    COMPLETED,
    CONTENT_METHODS,
    TIMED_OUT,
    UPSTREAM_ERROR,
    ProxyCore,
)
from sidecar.http import error_http, forward_headers, response_headers, session_query_values
from sidecar.identity import AuthError, Principal
from sidecar.jsonrpc import BadMessage
from sidecar.sessions import Pending, SessionTaken, owner_of
from sidecar.sse import Event, EventSplitter, EventTooLarge, encode_block, encode_event, parse_block
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
                headers = response_headers(up.headers)
                for name in [k for k in headers if k.lower() in ("content-type", "mcp-session-id")]:
                    del headers[name]
                if "text/event-stream" not in up.headers.get("Content-Type", "").lower():
                    # no stream: nothing in the body can be inspected as this transport's
                    return web.Response(status=up.status, headers=headers)
                headers["Content-Type"] = "text/event-stream"
                resp = web.StreamResponse(status=up.status, headers=headers)
                await resp.prepare(request)
                await self._relay(up, resp, principal, request.headers)
                return resp
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )

    async def _relay(
        self,
        up: aiohttp.ClientResponse,
        resp: web.StreamResponse,
        principal: Principal,
        headers: Mapping[str, str],
    ) -> None:
        core = self.core
        limits = core.settings.limits
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        sid: list[str] = []
        #: The upstream's message endpoint (the ``endpoint`` event's path and query).
        endpoint: list[str] = []

        def reply(doc: dict[str, Any]) -> None:
            # the proxy's answer to a server's request: to the session's message endpoint
            if endpoint:
                core.send_upstream(doc, headers, endpoint[0])

        last_message = [loop.time()]
        ended = ["the upstream ended the stream before answering"]

        async def pump() -> None:
            splitter = EventSplitter(limits.max_inspect_bytes)
            try:
                while chunk := await up.content.readany():
                    for raw in splitter.feed(chunk):
                        if not sid:
                            out = self._endpoint(raw, principal, queue, sid, endpoint)
                            if out is None:
                                return  # the stream cannot be bound: end it
                        else:
                            out, got = await core.relay_block(
                                raw, _key(sid[0]), principal, None, reply=reply
                            )
                            if got is not None:
                                core.outcome(got, principal, _key(sid[0]), COMPLETED)
                        if out:
                            if b"data: " in out:
                                last_message[0] = loop.time()
                            await queue.put(out)
            except (EventTooLarge, aiohttp.ClientError) as exc:
                log.warning("legacy SSE stream from upstream ended: %s", exc)
                ended[0] = f"the upstream failed while streaming ({type(exc).__name__})"
            finally:
                await queue.put(None)

        task = loop.create_task(pump())
        client_gone = True
        try:
            while True:
                wait = limits.idle_stream_timeout_s
                due = self._next_due(sid, last_message[0])
                if due is not None:
                    wait = min(wait, max(0.0, due - loop.time()))
                try:
                    async with asyncio.timeout(wait):
                        item = await queue.get()
                except TimeoutError:
                    if due is not None and loop.time() >= due - 1e-3:
                        await self._expire(resp, sid, principal, last_message[0])
                        continue
                    log.info("closing idle legacy SSE stream")
                    ended[0] = f"stream idle for {limits.idle_stream_timeout_s:g}s; closed"
                    break
                if item is None:
                    break
                if item:  # b"": a call was forwarded, its deadline is due
                    await resp.write(item)
            await self._answer_open_calls(resp, sid, principal, UPSTREAM_ERROR, ended[0])
            client_gone = False
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            pass
        finally:
            task.cancel()
            if sid:
                key = _key(sid[0])
                session = core.sessions.peek(key)
                if client_gone and session is not None:
                    for p in session.unanswered():
                        core.outcome(p, principal, key, CLIENT_GONE, "client disconnected")
                core.sessions.drop(key)
                if core.outputs is not None:
                    core.outputs.end_session(principal.agent, key)

    def _open_calls(self, sid: list[str]) -> list[Pending]:
        session = self.core.sessions.peek(_key(sid[0])) if sid else None
        if session is None:
            return []
        return [p for p in session.unanswered() if p.call_id and not p.expired]

    def _next_due(self, sid: list[str], last_message: float) -> float | None:
        """When the oldest open decided call runs out of time (None: none is open)."""
        calls = self._open_calls(sid)
        if not calls:
            return None
        timeout = self.core.settings.limits.upstream_timeout_s
        return min(max(p.started, last_message) + timeout for p in calls)

    async def _expire(
        self, resp: web.StreamResponse, sid: list[str], principal: Principal, last: float
    ) -> None:
        now = asyncio.get_running_loop().time()
        timeout = self.core.settings.limits.upstream_timeout_s
        late = [p for p in self._open_calls(sid) if max(p.started, last) + timeout <= now + 1e-3]
        why = f"the upstream sent no answer within {timeout:g}s"
        for p in late:
            await self._answer(resp, sid, principal, p, TIMED_OUT, why)

    async def _answer_open_calls(
        self, resp: web.StreamResponse, sid: list[str], principal: Principal, outcome: str, why: str
    ) -> None:
        for p in self._open_calls(sid):
            await self._answer(resp, sid, principal, p, outcome, why)

    async def _answer(
        self,
        resp: web.StreamResponse,
        sid: list[str],
        principal: Principal,
        p: Pending,
        outcome: str,
        why: str,
    ) -> None:
        """Answer an open call with an error the proxy gives itself; a late answer is withheld."""
        p.expired = True
        p.answered = True
        code = jsonrpc.LIMIT_EXCEEDED if outcome == TIMED_OUT else jsonrpc.UPSTREAM_UNAVAILABLE
        rid = p.request_id if isinstance(p.request_id, str | int) else None
        self.core.outcome(p, principal, _key(sid[0]), outcome, why)
        await resp.write(_event_bytes(jsonrpc.error_response(rid, code, why)))

    def _endpoint(
        self,
        raw: bytes,
        principal: Principal,
        queue: asyncio.Queue[bytes | None],
        sid: list[str],
        endpoint: list[str],
    ) -> bytes | None:
        """Bind the session named by the ``endpoint`` event; make its URL relative.

        Before it: keep-alives pass, messages are withheld (no session to match them
        to). None: the endpoint cannot be bound (no single session id, or one that
        belongs to another principal) and the stream ends.
        """
        block = parse_block(raw)
        ev = block.event
        if ev is None:
            return encode_block(block)
        if ev.event != "endpoint":
            log.warning("upstream SSE message before the endpoint event; withheld")
            return b""
        url = urlsplit(ev.data.strip())
        ids = session_query_values(url.query)
        if len(ids) != 1 or not ids[0]:
            log.warning("upstream endpoint event names %d session ids; stream ended", len(ids))
            return None
        try:
            session = self.core.sessions.bind(_key(ids[0]), owner_of(principal))
        except SessionTaken:
            log.warning(
                "upstream endpoint names a session bound to another principal; stream ended",
                extra={"agent": principal.agent},
            )
            return None
        sid.append(ids[0])
        session.inject = queue
        rel = url.path + ("?" + url.query if url.query else "")
        endpoint.append(rel)
        return encode_event(Event(rel, event="endpoint", id=ev.id, retry=ev.retry))

    async def message(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        try:
            principal = await core.authenticate(request)
        except AuthError as exc:
            return core.auth_response(exc)
        ids = session_query_values(request.rel_url.raw_query_string)
        key = _key(ids[0] if len(ids) == 1 else "")
        pending: Pending | None = None
        try:
            msg = await core.read_message(request)
            existing = core.sessions.peek(key) if len(ids) == 1 else None
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
                pending.inspect = core.watches_call(pending)
            else:
                call_id = ""
                if msg.method in CONTENT_METHODS and msg.is_request:
                    call_id = await core.audit_read(msg, principal, key)
                elif msg.is_response:  # the client answers a request of the server's
                    await core.check_answer(msg, principal, key)
                pending = core.pending_for(msg, principal, call_id)
            if pending is not None:
                pending.started = asyncio.get_running_loop().time()
                session.remember(msg.id, pending)
                if pending.call_id:
                    with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes it anyway
                        existing.inject.put_nowait(b"")  # the stream now waits for its answer
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
                status = up.status
        except UpstreamError as exc:
            self._refused(pending, principal, key, exc.reason)
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )
        if status >= 300:
            # the answer will not come on the stream; the upstream's text is not passed on
            why = f"the upstream refused the message (HTTP {status})"
            self._refused(pending, principal, key, why)
            return error_http(
                status, jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, why)
            )
        return web.Response(status=status, text="Accepted")

    def _refused(self, pending: Pending | None, principal: Principal, key: str, why: str) -> None:
        if pending is not None:
            pending.expired = pending.answered = True
            self.core.outcome(pending, principal, key, UPSTREAM_ERROR, why)
