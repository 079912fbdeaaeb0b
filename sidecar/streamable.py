"""Streamable HTTP (MCP 2025-03-26 .. 2026-07-28): POST, GET and DELETE on the MCP endpoint.

Each handler authenticates, bounds and checks the message (see
:mod:`sidecar.core`), decides ``tools/call``, then forwards and streams the
answer back. SSE answers are cut into events as they arrive (exactly as the SSE
standard reads them, :mod:`sidecar.sse`), and every event is parsed, matched to
the request it answers, rewritten when watched and re-encoded; whole answers are
inspected whatever their Content-Type. Nothing the proxy could not inspect is
passed on. A client that goes away cancels the upstream request; an upstream that
falls silent or fails before its answer gets the client a JSON-RPC error; every
decided call's outcome is audited (:meth:`sidecar.core.ProxyCore.outcome`).

Sessions: the one an ``initialize`` answer names is bound to the principal that
sent it; any other id is unknown (404) or someone else's (403).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

import aiohttp
from aiohttp import web

from palisade.policy.types import Decision
from sidecar import gate, jsonrpc
from sidecar.core import (
    CLIENT_GONE,
    COMPLETED,
    CONTENT_METHODS,
    TIMED_OUT,
    UPSTREAM_ERROR,
    ProxyCore,
    Reply,
    withheld,
)
from sidecar.http import error_http, forward_headers, response_headers, send_body
from sidecar.identity import AuthError, Principal
from sidecar.jsonrpc import BadMessage, Message
from sidecar.sessions import Pending
from sidecar.settings import Limits
from sidecar.sse import EventSplitter, EventTooLarge
from sidecar.upstream import UpstreamError

log = logging.getLogger(__name__)


_NEEDS_VERSION = frozenset({"tools/call", "tools/list"})


def _path_qs(request: web.Request) -> str:
    return request.rel_url.path_qs


class _Refused(Exception):
    """An upstream answer the proxy will not pass (a plain exception: it is raised
    inside ``async with``, which sets its traceback; a frozen BadMessage refuses that)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def read_whole(up: aiohttp.ClientResponse, limits: Limits) -> bytes:
    """A whole answer body within the limits; b"" when it is larger, late or cut off."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(limits.upstream_timeout_s):
            while size <= limits.max_inspect_bytes:
                part = await up.content.read(limits.max_inspect_bytes + 1 - size)
                if not part:
                    break
                parts.append(part)
                size += len(part)
    except (TimeoutError, aiohttp.ClientError):
        return b""
    return b"".join(parts) if size <= limits.max_inspect_bytes else b""


def _drop_header(headers: dict[str, str], name: str) -> None:
    for key in [k for k in headers if k.lower() == name]:
        del headers[key]


def _set_content_type(headers: dict[str, str], value: str) -> None:
    """One Content-Type, saying how the proxy read the body (none for no body)."""
    _drop_header(headers, "content-type")
    if value:
        headers["Content-Type"] = value


class StreamableHandlers:
    def __init__(self, core: ProxyCore) -> None:
        self.core = core

    def _reply_to(self, request: web.Request) -> Reply:
        """Sends the proxy's answer to a server's request on this request's session."""

        def reply(doc: dict[str, Any]) -> None:
            self.core.send_upstream(doc, request.headers, _path_qs(request))

        return reply

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
            pending: Pending | None
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
                pending.inspect = core.watches_call(pending)
            else:
                call_id = ""
                if msg.method in CONTENT_METHODS and msg.is_request:
                    call_id = await core.audit_read(msg, principal, session_id)
                elif msg.is_response:  # the client answers a request of the server's
                    await core.check_answer(msg, principal, session_id)
                pending = core.pending_for(msg, principal, call_id)
        except BadMessage as exc:
            return core.bad_input(exc, principal, session_id)
        expect = (msg.id, pending) if pending is not None else None
        if pending is not None:
            pending.started = asyncio.get_running_loop().time()
            if session_id:
                session.remember(msg.id, pending)
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
        pending = expect[1] if expect is not None else None
        core.metrics.in_flight.inc()
        answered = False
        try:
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            async with core.upstream.request("POST", _path_qs(request), headers, body) as up:
                core.metrics.upstream_seconds.observe(loop.time() - t0)
                ctype = up.headers.get("Content-Type", "").lower()
                out_headers = response_headers(up.headers)
                new_sid = self._session_header(msg, principal, session_id, up, out_headers)
                if new_sid is None:
                    raise _Refused(
                        jsonrpc.UPSTREAM_UNAVAILABLE,
                        "the upstream named a session that belongs to another principal; "
                        "the answer was withheld",
                    )
                if "text/event-stream" in ctype:
                    # whatever else the header says, clients that find this read SSE
                    _set_content_type(out_headers, "text/event-stream")
                    answered = True  # from here on the stream cancels upstream work itself
                    return await self._stream(
                        request, up, out_headers, session_id, principal, expect, msg, new_sid
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
                    raise _Refused(
                        jsonrpc.LIMIT_EXCEEDED, f"the upstream answer exceeds {limit} bytes"
                    )
                if data:
                    # any body, whatever its Content-Type says: a client that reads
                    # JSON out of it must read only what was inspected
                    data = await self._rewrite_json(
                        data, expect, session_id, principal, new_sid, self._reply_to(request)
                    )
                    _set_content_type(out_headers, "application/json" if data else "")
                answered = True
                status = up.status
        except UpstreamError as exc:
            answered = True
            if exc.timeout:
                core.cancel_upstream(msg.id, request.headers, _path_qs(request), "upstream timeout")
            core.outcome(
                pending,
                principal,
                session_id,
                TIMED_OUT if exc.timeout else UPSTREAM_ERROR,
                exc.reason,
            )
            status = 504 if exc.timeout else 502
            return error_http(
                status, jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason)
            )
        except TimeoutError:
            answered = True
            core.cancel_upstream(msg.id, request.headers, _path_qs(request), "upstream timeout")
            why = "the upstream answer did not complete in time"
            core.outcome(pending, principal, session_id, TIMED_OUT, why)
            return error_http(
                504, jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, why)
            )
        except aiohttp.ClientError as exc:
            # the upstream went away in the middle of its answer
            answered = True
            why = f"the upstream failed while answering ({type(exc).__name__})"
            core.outcome(pending, principal, session_id, UPSTREAM_ERROR, why)
            return error_http(
                502, jsonrpc.error_response(msg.id, jsonrpc.UPSTREAM_UNAVAILABLE, why)
            )
        except _Refused as exc:
            answered = True
            core.outcome(pending, principal, session_id, UPSTREAM_ERROR, exc.message)
            return error_http(502, jsonrpc.error_response(msg.id, exc.code, exc.message))
        finally:
            core.metrics.in_flight.dec()
            if not answered and msg.is_request:
                core.cancel_upstream(
                    msg.id, request.headers, _path_qs(request), "client disconnected"
                )
                core.outcome(pending, principal, session_id, CLIENT_GONE, "client disconnected")
        # sent once the upstream connection is back in the pool
        try:
            resp = await send_body(request, status, data, out_headers)
        except (ConnectionError, asyncio.CancelledError):
            core.outcome(pending, principal, session_id, CLIENT_GONE, "client disconnected")
            raise
        self._settle(pending, principal, session_id, status, data)
        return resp

    def _settle(
        self,
        pending: Pending | None,
        principal: Principal,
        session_id: str,
        status: int,
        data: bytes,
    ) -> None:
        """The outcome of a call answered with a whole body."""
        if pending is None or not pending.call_id:
            return
        if pending.answered:
            self.core.outcome(pending, principal, session_id, COMPLETED, http_status=status)
        else:
            self.core.outcome(
                pending,
                principal,
                session_id,
                UPSTREAM_ERROR,
                "the upstream sent no answer to the call",
                http_status=status,
            )

    def _session_header(
        self,
        msg: Message,
        principal: Principal,
        session_id: str,
        up: aiohttp.ClientResponse,
        out_headers: dict[str, str],
    ) -> str | None:
        """The session an answer names: bound to the principal when it answers an
        ``initialize``; on any other answer a session id other than the request's is
        not passed on. None: the upstream named another principal's session."""
        named = up.headers.get("Mcp-Session-Id", "")
        if not named:
            return ""
        if msg.method == "initialize" and msg.is_request:
            if not self.core.bind_session(named, principal):
                _drop_header(out_headers, "mcp-session-id")
                return None
            return named
        if named != session_id:
            _drop_header(out_headers, "mcp-session-id")
        return ""

    async def _rewrite_json(
        self,
        data: bytes,
        expect: tuple[object, Pending] | None,
        session_id: str,
        principal: Principal,
        new_sid: str = "",
        reply: Reply | None = None,
    ) -> bytes:
        """The body to send for an upstream's whole (non-SSE) answer: what was inspected.

        Not one JSON-RPC message (not JSON, a batch, the wrong id), so not
        inspectable: withheld (a lenient client could
        still read a secret out of it), and the caller learns why. With no request
        to answer (a notification was posted) nothing takes its place.
        """
        rid = expect[0] if expect is not None else None
        try:
            doc, standard = jsonrpc.loads_answer(data)
        except (ValueError, RecursionError):
            doc, standard = None, False
        why = "the upstream answer is not a JSON-RPC object"
        out: dict[str, Any] | None = None
        if isinstance(doc, dict):
            out, _ = await self.core.inspect_message(
                doc, session_id, principal, expect, new_sid, reply=reply
            )
            why = "the upstream answer does not answer this request"
        if out is not None:
            return jsonrpc.dumps_answer(out, standard)  # what was inspected, not ``data``
        log.warning("%s; withheld", why)
        if expect is None:
            return b""
        return jsonrpc.dumps(withheld(rid, why))

    async def _stream(
        self,
        request: web.Request,
        up: aiohttp.ClientResponse,
        headers: dict[str, str],
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        msg: Message | None,
        new_session: str = "",
        last_event_id: str = "",
    ) -> web.StreamResponse:
        """Relay an SSE stream event by event, every event parsed, inspected, re-encoded.

        A POST stream carries the answer to its request: when no message arrives for
        ``upstream_timeout_s`` before that answer, or the upstream fails or ends the
        stream without it, the client gets a JSON-RPC error for the request (a stream
        whose events had ids and that the upstream ended cleanly may be resumed, so
        it is left to the client). GET streams are closed when idle.
        """
        core = self.core
        limits = core.settings.limits
        pending = expect[1] if expect is not None else None
        awaiting = msg is not None and msg.is_request and pending is not None
        loop = asyncio.get_running_loop()
        resp = web.StreamResponse(status=up.status, headers=headers)
        await resp.prepare(request)
        splitter = EventSplitter(limits.max_inspect_bytes)
        reply = self._reply_to(request)
        completed = False
        resumable = False
        answered = False
        last_message = loop.time()
        failure: tuple[str, str] | None = None  # (outcome, reason): the proxy answers
        try:
            while True:
                wait = limits.idle_stream_timeout_s
                due = last_message + limits.upstream_timeout_s
                if awaiting and not answered:
                    wait = min(wait, max(0.0, due - loop.time()))
                try:
                    async with asyncio.timeout(wait):
                        chunk = await up.content.readany()
                except TimeoutError:
                    if awaiting and not answered and loop.time() >= due - 1e-3:
                        failure = (
                            TIMED_OUT,
                            f"the upstream sent no answer within {limits.upstream_timeout_s:g}s",
                        )
                    else:
                        log.info("closing idle stream", extra={"session": session_id})
                        if msg is not None and msg.id is not None and not answered:
                            failure = (
                                TIMED_OUT,
                                f"stream idle for {limits.idle_stream_timeout_s:g}s; closed",
                            )
                    break
                except (aiohttp.ClientError, EventTooLarge) as exc:
                    failure = (
                        UPSTREAM_ERROR,
                        f"the upstream failed while streaming ({type(exc).__name__})",
                    )
                    break
                if not chunk:
                    break
                try:
                    blocks = list(splitter.feed(chunk))
                except EventTooLarge as exc:
                    log.warning("closing stream: %s", exc)
                    failure = (UPSTREAM_ERROR, str(exc))
                    break
                for raw in blocks:
                    out, got = await core.relay_block(
                        raw,
                        session_id,
                        principal,
                        expect,
                        new_session,
                        reply=reply,
                        last_event_id=last_event_id,
                    )
                    if not out:
                        continue
                    await resp.write(out)
                    if out.startswith(b"id:") or b"\nid:" in out:
                        resumable = True
                    if b"data: " in out:
                        last_message = loop.time()
                    if got is not None and got is pending:
                        answered = True
                    elif got is not None:
                        # an answer on a GET (resumed) stream
                        core.outcome(got, principal, session_id, COMPLETED)
            if splitter.rest():
                # an event cut off by the end of the stream: clients discard it (SSE),
                # and it was never inspected, so it is not forwarded either
                log.warning("upstream SSE stream ended inside an event; the partial event dropped")
            if failure is None and awaiting and not answered and not (resumable and session_id):
                failure = (UPSTREAM_ERROR, "the upstream ended the stream without answering")
            if failure is not None and msg is not None and msg.id is not None:
                code = (
                    jsonrpc.LIMIT_EXCEEDED
                    if failure[0] == TIMED_OUT
                    else jsonrpc.UPSTREAM_UNAVAILABLE
                )
                err = jsonrpc.error_response(msg.id, code, failure[1])
                await resp.write(b"event: message\ndata: " + jsonrpc.dumps(err) + b"\n\n")
                core.cancel_upstream(msg.id, request.headers, _path_qs(request), failure[1])
                core.outcome(pending, principal, session_id, failure[0], failure[1])
            elif answered:
                core.outcome(pending, principal, session_id, COMPLETED, http_status=up.status)
            completed = True
            await resp.write_eof()
        except (ConnectionResetError, aiohttp.ClientConnectionError):
            pass  # the client went away; the finally below tells the upstream
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
                core.outcome(pending, principal, session_id, CLIENT_GONE, "client disconnected")
        return resp

    async def _whole_body(
        self, up: aiohttp.ClientResponse, session_id: str, principal: Principal
    ) -> bytes:
        """A GET or DELETE answer's body, inspected like any answer (nothing is expected)."""
        data = await read_whole(up, self.core.settings.limits)
        if not data:
            return b""
        return await self._rewrite_json(data, None, session_id, principal)

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
        last_event_id = request.headers.get("Last-Event-ID", "")
        resuming = bool(last_event_id)
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
                _drop_header(headers, "mcp-session-id")
                if "text/event-stream" in up.headers.get("Content-Type", "").lower():
                    _set_content_type(headers, "text/event-stream")
                    return await self._stream(
                        request, up, headers, session_id, principal, None, None, "", last_event_id
                    )
                body = await self._whole_body(up, session_id, principal)
                _set_content_type(headers, "application/json" if body else "")
                return web.Response(status=up.status, body=body, headers=headers)
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
                body = await self._whole_body(up, session_id, principal)
                headers = response_headers(up.headers)
                _drop_header(headers, "mcp-session-id")
                _set_content_type(headers, "application/json" if body else "")
                if up.status < 300 and session_id:
                    core.sessions.drop(session_id)
                    if core.outputs is not None:
                        core.outputs.end_session(principal.agent, session_id)
                return web.Response(status=up.status, body=body, headers=headers)
        except UpstreamError as exc:
            return error_http(
                504 if exc.timeout else 502,
                jsonrpc.error_response(None, jsonrpc.UPSTREAM_UNAVAILABLE, exc.reason),
            )
