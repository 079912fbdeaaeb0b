"""The proxy's shared steps, used by both transports (Streamable HTTP and legacy SSE).

:class:`ProxyCore` holds the dependencies (policy, identity, audit, upstream,
sessions, metrics) and does the steps common to every message: authenticate,
read and bound the body, check routing headers, decide a ``tools/call`` and audit
it, recognise and rewrite answers (``tools/list`` filtered, untrusted output
marked), and tell the upstream when a client went away. The transports in
:mod:`sidecar.streamable` and :mod:`sidecar.legacy` only move bytes.

Errors: identity raises :class:`~sidecar.identity.AuthError`, bounds and
headers raise :class:`~sidecar.jsonrpc.BadMessage`, the upstream raises
:class:`~sidecar.upstream.UpstreamError`; each transport turns them into HTTP
answers at its edge with :func:`sidecar.http.error_http`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from palisade.audit.record import Entry
from palisade.policy.types import Call, Decision, Verdict
from sidecar import gate, jsonrpc
from sidecar.audit import AuditSink
from sidecar.http import error_http, forward_headers
from sidecar.identity import Authenticator, AuthError, Principal
from sidecar.jsonrpc import BadMessage, Message
from sidecar.metrics import SidecarMetrics
from sidecar.policy import PolicyHolder
from sidecar.quarantine import OutputGuard
from sidecar.sessions import Pending, Session, SessionBook
from sidecar.settings import SidecarSettings
from sidecar.sse import Event, encode_event, parse_event
from sidecar.upstream import Upstream

log = logging.getLogger(__name__)

#: Requests whose answers reach the model as a tool's output does: audited before
#: they are forwarded (not decided), and their answers redacted.
CONTENT_METHODS = frozenset({"resources/read", "prompts/get"})
#: Methods whose answers the proxy inspects (``tools/call`` is watched per call).
_INSPECTED = frozenset({"tools/list", "initialize", "server/discover"}) | CONTENT_METHODS


_MODERN = "2026-07-28"
_PV_META = "io.modelcontextprotocol/protocolVersion"
_CAPS_META = "io.modelcontextprotocol/clientCapabilities"
_SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"


def server_version_of(result: Any) -> str:
    """``serverInfo.version`` of an initialize or (2026-07-28) discover result."""
    if not isinstance(result, Mapping):
        return ""
    info = result.get("serverInfo")
    meta = result.get("_meta")
    if not isinstance(info, Mapping) and isinstance(meta, Mapping):
        info = meta.get(_SERVER_INFO_META)
    if isinstance(info, Mapping) and isinstance(info.get("version"), str):
        return str(info["version"])
    return ""


def _json_messages(text: str) -> list[dict[str, Any]]:
    """JSON-RPC messages of a JSON body or an SSE body."""
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return []
        return [doc] if isinstance(doc, dict) else []
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        ev = parse_event(block.encode("utf-8"))
        if ev is not None and ev.data.startswith("{"):
            try:
                doc = json.loads(ev.data)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
    return out


class ApprovalDesk(Protocol):
    """Settles a ``require_approval`` verdict: allowed when a human approved this exact
    call, denied when one refused it, else asked for (the verdict keeps its approval id)."""

    def settle(
        self, call: Call, verdict: Verdict, secret_names: frozenset[str]
    ) -> tuple[Verdict, dict[str, Any]]: ...


@dataclass
class ProxyCore:
    settings: SidecarSettings
    policy: PolicyHolder
    authenticator: Authenticator
    audit: AuditSink
    upstream: Upstream
    metrics: SidecarMetrics = field(default_factory=SidecarMetrics)
    sessions: SessionBook = field(default_factory=SessionBook)
    background: set[asyncio.Task[None]] = field(default_factory=set)
    draining: bool = False
    _version_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _resumable: dict[str, set[asyncio.Task[None]]] = field(default_factory=dict)
    #: Handlers of standalone GET streams (server-initiated messages only).
    listening: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Redaction and quarantine of ``tools/call`` results (docs/quarantine.md);
    #: ``None``: untrusted results are only marked.
    outputs: OutputGuard | None = None
    #: Humans' answers to ``require_approval`` (sidecar/fleet, with a distributor);
    #: ``None``: an approval verdict stays a refusal that cites its approval id.
    approvals: ApprovalDesk | None = None

    # -- identity and input -------------------------------------------------------

    async def authenticate(self, request: web.Request) -> Principal:
        try:
            return await self.authenticator.authenticate(request.headers)
        except AuthError as exc:
            self.metrics.rejected.labels("auth").inc()
            await self.commit_record(
                Entry(
                    decision="deny",
                    rule_id="identity",
                    reason=exc.reason,
                    kind="auth",
                    server=self.settings.server_name,
                    details={"http_status": exc.status, "path": request.path},
                )
            )
            raise

    def auth_response(self, exc: AuthError) -> web.Response:
        doc = jsonrpc.error_response(None, jsonrpc.UNAUTHORIZED, f"Unauthorized: {exc.reason}")
        return error_http(exc.status, doc, headers={"WWW-Authenticate": exc.www_authenticate})

    async def read_message(self, request: web.Request) -> Message:
        """Content type, size and JSON bounds; one message, never a batch."""
        limits = self.settings.limits
        if request.content_type != "application/json":
            raise BadMessage(
                jsonrpc.INVALID_REQUEST,
                f"Invalid Request: Content-Type must be application/json, not "
                f"{request.content_type or 'missing'!r}",
                415,
            )
        too_large = BadMessage(
            jsonrpc.LIMIT_EXCEEDED,
            f"Request body exceeds the limit of {limits.max_body_bytes} bytes",
            413,
        )
        if request.content_length is not None:
            if request.content_length > limits.max_body_bytes:
                raise too_large
            # a declared length within the limit: aiohttp reads exactly that much
            try:
                raw = await request.content.readexactly(request.content_length)
            except asyncio.IncompleteReadError:
                raise BadMessage(
                    jsonrpc.PARSE_ERROR, "Parse error: the body ended before Content-Length"
                ) from None
            return jsonrpc.parse_message(raw, max_depth=limits.max_json_depth)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise too_large
            chunks.append(chunk)
        return jsonrpc.parse_message(b"".join(chunks), max_depth=limits.max_json_depth)

    def bad_input(
        self, exc: BadMessage, principal: Principal | None, session_id: str = ""
    ) -> web.Response:
        self.metrics.rejected.labels("bad_input").inc()
        self.record(
            Entry(
                agent=principal.agent if principal else "",
                tenant=principal.tenant if principal else "",
                on_behalf_of=principal.on_behalf_of if principal else "",
                server=self.settings.server_name,
                session=session_id,
                decision="deny",
                rule_id="bad-input",
                reason=exc.message,
                request_id="" if exc.request_id is None else str(exc.request_id),
                dev_identity=bool(principal and principal.dev_mode),
                kind="bad_input",
                details={"code": exc.code, "http_status": exc.http_status},
            )
        )
        return error_http(
            exc.http_status, jsonrpc.error_response(exc.request_id, exc.code, exc.message)
        )

    def session_for(self, session_id: str, principal: Principal) -> Session:
        """The session, bound to the first agent that used it; another agent gets 403."""
        s = self.sessions.get(session_id)
        if not session_id:
            return s
        if not s.agent:
            s.agent = principal.agent
        elif s.agent != principal.agent:
            raise BadMessage(
                jsonrpc.UNAUTHORIZED, "Forbidden: this session belongs to another agent", 403
            )
        return s

    def check_headers(self, msg: Message, request: web.Request, session: Session) -> None:
        schema: Mapping[str, Any] | None = None
        if msg.method == "tools/call":
            tool = session.tools.get(str(msg.params.get("name", "")))
            if tool is not None and isinstance(tool.get("inputSchema"), Mapping):
                schema = tool["inputSchema"]
        # CIMultiDict: case-insensitive lookups, and items() keeps duplicated headers
        gate.check_routing_headers(msg, request.headers, request.headers.items(), schema)

    # -- the upstream's version ------------------------------------------------------

    async def ensure_server_version(self) -> str:
        """The upstream's ``serverInfo.version``, asking the upstream once if no answer showed it.

        The registry approves server versions, so the version must be known before
        a decision; clients of the stateless 2026-07-28 revision may never send a
        request whose answer carries it.
        """
        known = self.sessions.get("").server_version
        if known:
            return known
        async with self._version_lock:
            known = self.sessions.get("").server_version
            if not known:
                known = await self._probe_version()
                if known:
                    self.sessions.get("").server_version = known
            return known

    async def _probe_version(self) -> str:
        path = self.settings.mcp_path
        accept = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        discover = {
            "jsonrpc": "2.0",
            "id": "palisade-discover",
            "method": "server/discover",
            "params": {"_meta": {_PV_META: _MODERN, _CAPS_META: {}}},
        }
        modern = {**accept, "MCP-Protocol-Version": _MODERN, "Mcp-Method": "server/discover"}
        init = {
            "jsonrpc": "2.0",
            "id": "palisade-init",
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "palisade-sidecar", "version": "1"},
            },
        }
        for body, headers in ((discover, modern), (init, accept)):
            try:
                async with self.upstream.request("POST", path, headers, jsonrpc.dumps(body)) as up:
                    text = await up.text()
                    sid = up.headers.get("Mcp-Session-Id", "")
                if sid:
                    async with self.upstream.request("DELETE", path, {"Mcp-Session-Id": sid}):
                        pass
            except Exception as exc:
                log.warning("cannot ask the upstream for its version: %s", exc)
                continue
            for doc in _json_messages(text):
                version = server_version_of(doc.get("result"))
                if version:
                    return version
        return ""

    # -- decisions ------------------------------------------------------------------

    async def decide(
        self, msg: Message, principal: Principal, session_id: str, session: Session
    ) -> tuple[Verdict, Pending]:
        """Decide a ``tools/call`` and audit it; an audit failure turns allow into deny.

        The record is committed (on disk, in a signed batch) before this returns,
        so nothing is forwarded unaudited; concurrent calls share the write.
        """
        name = str(msg.params.get("name", "")) if msg.method == "tools/call" else ""
        known = session.tools.get(name) or self.sessions.get("").tools.get(name)
        call = gate.tool_call(
            msg,
            agent=principal.agent,
            server=self.settings.server_name,
            session=session_id,
            on_behalf_of=principal.on_behalf_of,
            server_version=session.server_version or self.sessions.get("").server_version,
            labels=self.settings.labels,
            declared_risk=gate.risk_from_annotations(known) if known is not None else None,
        )
        t0 = time.perf_counter_ns()
        snap = self.policy.snapshot
        pin = snap.pin_problem(call.server, known, call.tool) if snap is not None else ""
        if snap is not None and pin:
            verdict = Verdict(Decision.DENY, "registry", pin, snap.revision, snap.digest)
        else:
            verdict = self.policy.decide(call)
        latency = time.perf_counter_ns() - t0
        self.metrics.decision_seconds.observe(latency / 1e9)
        facts = snap.facts(call.tool) if snap is not None else None
        details: dict[str, Any] = {"risk": str(verdict.risk)} if verdict.risk else {}
        if self.approvals is not None and verdict.decision is Decision.REQUIRE_APPROVAL:
            secrets = facts.secret_arguments if facts else frozenset()
            verdict, settled = self.approvals.settle(call, verdict, secrets)
            details.update(settled)
        entry = Entry(
            agent=principal.agent,
            tenant=verdict.tenant or principal.tenant,
            on_behalf_of=principal.on_behalf_of,
            server=call.server,
            tool=call.tool,
            session=session_id,
            arguments=call.arguments,
            decision=str(verdict.decision),
            rule_id=verdict.rule_id,
            reason=verdict.reason,
            bundle_revision=verdict.bundle_revision,
            latency_ns=latency,
            request_id=call.request_id,
            dev_identity=principal.dev_mode,
            approval_id=verdict.approval_id,
            details=details,
        )
        try:
            await self.audit.commit(entry, facts.secret_arguments if facts else ())
        except Exception:
            log.exception("audit write failed; refusing the call", extra={"tool": call.tool})
            verdict = Verdict(
                Decision.DENY,
                "audit-unavailable",
                "the audit log cannot be written; denied (fail closed)",
                verdict.bundle_revision,
            )
        self.metrics.decisions.labels(str(verdict.decision), verdict.rule_id).inc()
        level = logging.DEBUG if verdict.allowed else logging.INFO
        if log.isEnabledFor(level):  # the fields are not built for a line nobody writes
            log.log(
                level,
                "tools/call decided",
                extra={
                    "agent": principal.agent,
                    "tool": call.tool,
                    "decision": str(verdict.decision),
                    "rule": verdict.rule_id,
                    "revision": verdict.bundle_revision,
                    "session": session_id,
                    "dev_identity": principal.dev_mode,
                },
            )
        pending = Pending(
            msg.method or "tools/call",
            tool=call.tool,
            untrusted=bool(facts and facts.untrusted_output),
            agent=principal.agent,
        )
        return verdict, pending

    def decides(self, msg: Message) -> bool:
        """Whether ``msg`` is decided by the policy: every ``tools/call``, and a
        ``resources/read`` or ``prompts/get`` when the bundle registers that method as
        a tool of this server (``{name: resources/read, risk: read}``), so rules and
        budgets apply to it as to any tool, with ``args.uri`` or ``args.name``."""
        if not msg.is_request:
            return False
        if msg.method == "tools/call":
            return True
        if msg.method not in CONTENT_METHODS:
            return False
        snap = self.policy.snapshot
        if snap is None or snap.compiled is None:
            return False
        return snap.compiled.tool(self.settings.server_name, msg.method) is not None

    async def audit_read(self, msg: Message, principal: Principal, session_id: str) -> None:
        """Record a ``resources/read`` or ``prompts/get`` before it is forwarded.

        Unless the bundle registers the method (:meth:`decides`) these pass without a
        decision, but not unaudited: the record (kind ``read``, rule ``not-governed``)
        is committed first, and when it cannot be, the request is refused
        (:class:`BadMessage`, fail closed).
        """
        params = msg.params
        if msg.method == "resources/read":
            arguments: dict[str, Any] = {"uri": params.get("uri")}
        else:
            arguments = {"name": params.get("name"), "arguments": params.get("arguments") or {}}
        entry = Entry(
            agent=principal.agent,
            tenant=principal.tenant,
            on_behalf_of=principal.on_behalf_of,
            server=self.settings.server_name,
            tool=msg.method or "",
            session=session_id,
            arguments=arguments,
            decision="allow",
            rule_id="not-governed",
            reason=f"{msg.method} is not registered for this server: forwarded undecided",
            request_id=str(msg.id),
            dev_identity=principal.dev_mode,
            kind="read",
        )
        try:
            await self.audit.commit(entry)
        except Exception:
            log.exception("audit write failed; refusing the read", extra={"method": msg.method})
            raise BadMessage(
                jsonrpc.UPSTREAM_UNAVAILABLE,
                "the audit log cannot be written; refused (fail closed)",
                503,
                msg.id,
            ) from None

    def pending_for(self, msg: Message, principal: Principal) -> Pending | None:
        """What to watch for in the answer to a non-``tools/call`` request."""
        if msg.is_request and msg.method in _INSPECTED:
            return Pending(msg.method or "", agent=principal.agent)
        return None

    def record(self, entry: Entry) -> None:
        try:
            self.audit.write(entry)
        except Exception:
            log.exception("audit write failed", extra={"kind": entry.kind})

    async def commit_record(self, entry: Entry) -> None:
        """:meth:`record` through the group commit (for refusals in async code)."""
        try:
            await self.audit.commit(entry)
        except Exception:
            log.exception("audit write failed", extra={"kind": entry.kind})

    # -- answers on their way back -------------------------------------------------

    def may_call(self, principal: Principal, session_id: str, tool: Mapping[str, Any]) -> bool:
        """Whether ``tools/list`` should show ``tool`` to this agent (see docs/sidecar.md).

        A dry run without arguments decides; a denial hides the tool only when it
        cannot depend on the arguments (registry, default, or a rule without a
        ``when`` that could go the other way) and is not a budget that may refill.
        """
        session = self.sessions.peek(session_id)
        verdict = self.policy.decide(
            Call(
                agent=principal.agent,
                server=self.settings.server_name,
                tool=str(tool.get("name", "")),
                session=session_id,
                on_behalf_of=principal.on_behalf_of,
                server_version=(session.server_version if session else "")
                or self.sessions.get("").server_version,
                labels=self.settings.labels,
                server_declared_risk=gate.risk_from_annotations(tool),
            ),
            dry_run=True,
            explain=True,
        )
        snap = self.policy.snapshot
        if snap is not None and snap.pin_problem(
            self.settings.server_name, tool, str(tool.get("name", ""))
        ):
            return False  # a changed definition of a pinned tool is hidden (and refused)
        return gate.listable(verdict)

    def watches_call(self, pending: Pending) -> bool:
        """Whether the answer to this allowed ``tools/call`` must be inspected."""
        if self.outputs is not None:
            return self.outputs.watches(pending.untrusted)
        return pending.untrusted

    async def rewrite_result(
        self,
        pending: Pending,
        doc: dict[str, Any],
        session_id: str,
        principal: Principal,
        response_session: str = "",
    ) -> dict[str, Any]:
        """Rewrite one JSON-RPC answer the proxy is watching; other answers pass unchanged."""
        result = doc.get("result")
        if pending.method == "tools/call" and self.outputs is not None and "error" in doc:
            return self.outputs.rewrite_error(doc)
        if pending.method in CONTENT_METHODS:
            if self.outputs is not None:
                if "error" in doc:
                    return self.outputs.rewrite_error(doc)
                doc = self.outputs.redact_content(doc)
            # a read registered with untrustedOutput is flagged for the host, as a tool's
            # output is (the quarantine's extractors know tool results only)
            if pending.untrusted and isinstance(doc.get("result"), dict):
                return {**doc, "result": gate.mark_untrusted(doc["result"])}
            return doc
        if not isinstance(result, dict):
            return doc
        if pending.method in ("initialize", "server/discover"):
            version = server_version_of(result)
            if version:
                # One upstream process: its version also holds for sessions opened
                # before this proxy started (kept on the stateless record "").
                self.sessions.get("").server_version = version
                sid = response_session or session_id
                if sid:
                    self.session_for(sid, principal).server_version = version
            return doc
        if pending.method == "tools/list":
            s = self.sessions.get(session_id)
            for tool in result.get("tools") or []:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str):
                    s.tools[tool["name"]] = tool
            filtered = gate.filter_tools(result, lambda t: self.may_call(principal, session_id, t))
            snap = self.policy.snapshot
            if self.outputs is not None and snap is not None:
                filtered = self.outputs.list_result(
                    filtered, lambda name: snap.facts(name).untrusted_output
                )
            return {**doc, "result": filtered}
        if pending.method == "tools/call" and self.outputs is not None:
            new = await self.outputs.rewrite(
                result,
                untrusted=pending.untrusted,
                scope=self.outputs.scope(principal.agent, session_id),
                tool=pending.tool,
            )
            return doc if new is result else {**doc, "result": new}
        if pending.method == "tools/call" and pending.untrusted:
            return {**doc, "result": gate.mark_untrusted(result)}
        return doc

    async def rewrite_event(
        self,
        raw: bytes,
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        response_session: str = "",
    ) -> bytes:
        """Inspect one SSE event: rewrite it when it answers a watched request.

        ``expect`` is the request a POST stream answers; on GET and legacy streams
        the session's recent requests are looked up instead.
        """
        ev = parse_event(raw)
        if ev is None or not ev.data or ev.event not in ("", "message"):
            return raw  # comments, priming events, other event types: no JSON-RPC message
        try:
            doc, standard = jsonrpc.loads_answer(ev.data)
        except (ValueError, RecursionError):
            doc, standard = None, False
        if not isinstance(doc, dict):
            # not one JSON-RPC message (not JSON, or a batch nothing asked for):
            # it cannot be inspected, so it is not forwarded
            log.warning("upstream SSE message is not a JSON-RPC object; withheld")
            return b""
        # forward only what was inspected (see jsonrpc.loads_answer)
        raw = encode_event(
            Event(jsonrpc.dumps_answer(doc, standard).decode(), ev.event, ev.id, ev.retry)
        )
        if (
            isinstance(doc, dict)
            and "id" not in doc
            and expect is not None
            and expect[1].untrusted
            and self.outputs is not None
        ):
            # progress and log text of an untrusted tool is untrusted output too
            note = self.outputs.quarantine_notification(doc)
            if note is doc:
                return raw
            data = json.dumps(note, separators=(",", ":"))
            return encode_event(Event(data, ev.event, ev.id, ev.retry))
        if not isinstance(doc, dict) or "method" in doc or "id" not in doc:
            return raw
        if expect is not None:
            pending = expect[1] if doc["id"] == expect[0] else None
        else:
            s = self.sessions.peek(session_id)
            pending = s.lookup(doc["id"]) if s is not None else None
        if pending is None:
            return raw
        new = await self.rewrite_result(pending, doc, session_id, principal, response_session)
        if new is doc:
            return raw
        return encode_event(
            Event(json.dumps(new, separators=(",", ":")), ev.event, ev.id, ev.retry)
        )

    # -- clients that go away ---------------------------------------------------------

    def cancel_upstream(
        self,
        request_id: object,
        headers: Mapping[str, str],
        path_qs: str,
        reason: str,
        *,
        session_id: str = "",
        delay_s: float = 0.0,
    ) -> None:
        """Tell the upstream to stop working on a request whose client is gone.

        A dropped connection is not a cancellation in MCP, so the proxy sends the
        ``notifications/cancelled`` the client can no longer send. When the stream
        was resumable (its events carried ids) the client may come back with
        ``Last-Event-ID``: the cancellation then waits ``delay_s`` and is called off
        by :meth:`resumed`.
        """
        if request_id is None:
            return
        note = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": request_id, "reason": reason},
        }
        fwd = forward_headers(headers)
        fwd.pop("last-event-id", None)
        fwd.pop("Last-Event-ID", None)
        for k in list(fwd):
            if k.lower() in ("mcp-method", "mcp-name") or k.lower().startswith("mcp-param-"):
                del fwd[k]
        if any(k.lower() == "mcp-protocol-version" for k in fwd):
            fwd["Mcp-Method"] = "notifications/cancelled"
        fwd["Content-Type"] = "application/json"
        fwd["Accept"] = "application/json, text/event-stream"

        async def send() -> None:
            try:
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                async with self.upstream.request("POST", path_qs, fwd, jsonrpc.dumps(note)):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # best effort; the upstream may be gone too
                log.debug("could not send cancellation upstream: %s", exc)

        task = asyncio.get_running_loop().create_task(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        if delay_s > 0 and session_id:
            waiting = self._resumable.setdefault(session_id, set())
            waiting.add(task)
            task.add_done_callback(waiting.discard)

    def close_listening_streams(self) -> None:
        """At shutdown: end standalone GET streams (they carry no call's answer)."""
        for task in list(self.listening):
            task.cancel()

    def resumed(self, session_id: str) -> None:
        """A client resumed a session's stream: keep its requests' upstream work."""
        for task in list(self._resumable.pop(session_id, ())):
            task.cancel()
