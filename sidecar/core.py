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
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from palisade.audit.record import OUTCOME_KIND, Entry
from palisade.audit.redact import ALL_FIELDS
from palisade.policy.types import Call, Decision, Verdict
from sidecar import gate, jsonrpc
from sidecar.audit import AuditSink
from sidecar.http import error_http, forward_headers
from sidecar.identity import Authenticator, AuthError, Principal
from sidecar.jsonrpc import BadMessage, Message
from sidecar.metrics import SidecarMetrics
from sidecar.policy import PolicyHolder
from sidecar.quarantine import OutputGuard
from sidecar.sessions import (
    Pending,
    Session,
    SessionBook,
    SessionTaken,
    id_keys,
    owner_of,
    tied_to,
)
from sidecar.settings import SidecarSettings
from sidecar.sse import Block, Event, EventSplitter, encode_block, encode_event, parse_block
from sidecar.upstream import Upstream

log = logging.getLogger(__name__)

#: Requests whose answers reach the model as a tool's output does: audited before
#: they are forwarded (not decided), and their answers redacted.
CONTENT_METHODS = frozenset({"resources/read", "prompts/get"})
#: Methods whose answers the proxy inspects (``tools/call`` is watched per call).
_INSPECTED = frozenset({"tools/list", "initialize", "server/discover"}) | CONTENT_METHODS


#: Requests a server may send the client, by method, as the bundle's server entry
#: allows them (``serverRequests``); any other but ``ping`` is refused.
SERVER_REQUESTS = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
#: Those whose params put text before the client's model or user: refused while a
#: call of an untrusted tool runs, whatever the bundle allows (the text would be
#: that tool's, unquarantined).
_TEXT_REQUESTS = frozenset({"sampling/createMessage", "elicitation/create"})
#: ``kind`` of the audit record of a server's request.
SERVER_REQUEST_KIND = "server_request"
#: ``kind`` of the audit record of the client's answer to one.
SERVER_REQUEST_ANSWER_KIND = "server_request_answer"

#: Sends one JSON-RPC message to the upstream on the stream's session (a refusal).
Reply = Callable[[dict[str, Any]], None]

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
    if text.strip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return []
        return [doc] if isinstance(doc, dict) else []
    out = []
    splitter = EventSplitter(len(text) * 4 + 16)
    for raw in splitter.feed(text.encode("utf-8") + b"\n\n"):
        ev = parse_block(raw).event
        if ev is not None and ev.data.startswith("{"):
            try:
                doc = json.loads(ev.data)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out.append(doc)
    return out


#: What became of a forwarded call (``details.outcome`` of its outcome record).
COMPLETED, UPSTREAM_ERROR, TIMED_OUT, CLIENT_GONE = (
    "completed",
    "upstream_error",
    "timed_out",
    "client_gone",
)


def withheld(request_id: Any, why: str) -> dict[str, Any]:
    """The JSON-RPC error that stands in for an upstream answer the proxy will not pass."""
    rid = (
        request_id
        if isinstance(request_id, str | int) and not isinstance(request_id, bool)
        else None
    )
    return jsonrpc.error_response(rid, jsonrpc.UPSTREAM_UNAVAILABLE, f"{why}; it was withheld")


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
    #: The upstream has told what it is (an ``initialize`` or ``server/discover``
    #: answer, or a probe's), its version possibly empty: it is not asked again.
    _version_answered: bool = False
    _resumable: dict[str, set[asyncio.Task[None]]] = field(default_factory=dict)
    #: Handlers of standalone GET streams (server-initiated messages only).
    listening: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Redaction and quarantine of ``tools/call`` results (docs/quarantine.md);
    #: ``None``: untrusted results are only marked.
    outputs: OutputGuard | None = None
    #: Humans' answers to ``require_approval`` (sidecar/fleet, with a distributor);
    #: ``None``: an approval verdict stays a refusal that cites its approval id.
    approvals: ApprovalDesk | None = None
    #: Outcome records being written (not cancelled at shutdown, unlike ``background``).
    _outcomes: set[asyncio.Task[None]] = field(default_factory=set)
    #: Server requests passed to clients of a server without sessions, by client.
    _sessionless_asked: dict[Any, Session] = field(default_factory=dict)

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
                    details={"http_status": exc.status, "path": request.path, **exc.details},
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
                details={
                    "code": exc.code,
                    "http_status": exc.http_status,
                    **(principal.audit_details() if principal else {}),
                },
            )
        )
        return error_http(
            exc.http_status, jsonrpc.error_response(exc.request_id, exc.code, exc.message)
        )

    def session_for(self, session_id: str, principal: Principal) -> Session:
        """The session ``session_id`` names, if the upstream created it for this principal.

        No id: the stateless record. An id the upstream never gave out here is
        unknown (404: the client starts a new session), never created on first use;
        one that belongs to another principal is refused (403).
        """
        if not session_id:
            return self.sessions.stateless
        s = self.sessions.owned(session_id, owner_of(principal))
        if s is not None:
            return s
        if self.sessions.peek(session_id) is None:
            raise BadMessage(
                jsonrpc.INVALID_REQUEST,
                "Session not found: this id was not given out by the server through this "
                "proxy (or has ended); initialize a new session",
                404,
            )
        raise BadMessage(
            jsonrpc.UNAUTHORIZED,
            "Forbidden: this session belongs to another agent (or principal)",
            403,
        )

    def bind_session(self, session_id: str, principal: Principal) -> bool:
        """Bind the session an ``initialize`` answer named to the principal that asked.

        False when the upstream named a session that already belongs to someone else:
        its answer is then withheld.
        """
        try:
            self.sessions.bind(session_id, owner_of(principal))
        except SessionTaken:
            log.warning(
                "the upstream named a session that belongs to another principal; withheld",
                extra={"agent": principal.agent},
            )
            return False
        return True

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
        if self._version_answered or self.sessions.stateless.server_version:
            return self.sessions.stateless.server_version
        async with self._version_lock:
            if not self._version_answered:
                answered = await self._probe_version()
                if answered is not None:
                    self._learn_version(answered)
            return self.sessions.stateless.server_version

    def _learn_version(self, version: str) -> None:
        """One upstream process: its version (``""`` when it reports none) also holds
        for sessions opened before this proxy started (kept on the stateless record)."""
        self._version_answered = True
        if version or not self.sessions.stateless.server_version:
            self.sessions.stateless.server_version = version

    async def _probe_version(self) -> str | None:
        """The version an upstream reports (``""``: it answered without one), or
        ``None`` when it could not be asked (asked again on the next call)."""
        answered = False
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
                if isinstance(doc.get("result"), dict):
                    answered = True
                    version = server_version_of(doc["result"])
                    if version:
                        return version
        return "" if answered else None

    # -- decisions ------------------------------------------------------------------

    async def decide(
        self, msg: Message, principal: Principal, session_id: str, session: Session
    ) -> tuple[Verdict, Pending]:
        """Decide a ``tools/call`` and audit it; an audit failure turns allow into deny.

        The record is committed (on disk, in a signed batch) before this returns,
        so nothing is forwarded unaudited; concurrent calls share the write.
        """
        name = str(msg.params.get("name", "")) if msg.method == "tools/call" else ""
        known = session.tools.get(name) or self.sessions.stateless.tools.get(name)
        # quarantined facts name things by handle ($POD1): the real values go back in
        # before the decision, so the policy, the audit and the upstream see them
        resolved = (
            self.outputs.resolve_arguments(msg, principal.agent, session_id)
            if self.outputs is not None and msg.method == "tools/call"
            else []
        )
        call = gate.tool_call(
            msg,
            agent=principal.agent,
            server=self.settings.server_name,
            session=session_id,
            on_behalf_of=principal.on_behalf_of,
            server_version=session.server_version or self.sessions.stateless.server_version,
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
        facts = snap.facts(call.tool) if snap is not None else None
        call_id = uuid.uuid4().hex
        details: dict[str, Any] = {"risk": str(verdict.risk)} if verdict.risk else {}
        details["call_id"] = call_id
        if call.server_version:  # what the server reported: lets a replay re-decide the call
            details["server_version"] = call.server_version
        if verdict.would_be:  # rules in mode: audit that matched (the call went on)
            details["would_be"] = [
                {"rule": w.rule_id, "decision": str(w.decision), "reason": w.reason}
                for w in verdict.would_be
            ]
            for w in verdict.would_be:
                self.metrics.would_decide(
                    decision=str(w.decision),
                    rule=w.rule_id,
                    agent=principal.agent,
                    server=call.server,
                    tool=call.tool,
                )
        if resolved:
            details["handles_resolved"] = resolved
        details.update(principal.audit_details())  # the whole act chain, when there is one
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
            self.metrics.decisions.audit_failures.inc()
            verdict = Verdict(
                Decision.DENY,
                "audit-unavailable",
                "the audit log cannot be written; denied (fail closed)",
                verdict.bundle_revision,
            )
        self.metrics.decided(
            decision=str(verdict.decision),
            rule=verdict.rule_id,
            agent=principal.agent,
            server=call.server,
            tool=call.tool,
            seconds=latency / 1e9,
        )
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
        meta = msg.params.get("_meta")
        pending = Pending(
            msg.method or "tools/call",
            tool=call.tool,
            untrusted=bool(facts and facts.untrusted_output),
            agent=principal.agent,
            request_id=msg.id,
            call_id=call_id if verdict.allowed else "",
            owner=owner_of(principal),
            progress_token=meta.get("progressToken") if isinstance(meta, Mapping) else None,
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

    async def audit_read(self, msg: Message, principal: Principal, session_id: str) -> str:
        """Record a ``resources/read`` or ``prompts/get`` before it is forwarded.

        Unless the bundle registers the method (:meth:`decides`) these pass without a
        decision, but not unaudited: the record (kind ``read``, rule ``not-governed``)
        is committed first, and when it cannot be, the request is refused
        (:class:`BadMessage`, fail closed). Returns the call id its outcome record cites.
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
            details={"call_id": (call_id := uuid.uuid4().hex), **principal.audit_details()},
        )
        try:
            await self.audit.commit(entry)
        except Exception:
            log.exception("audit write failed; refusing the read", extra={"method": msg.method})
            self.metrics.decisions.audit_failures.inc()
            raise BadMessage(
                jsonrpc.UPSTREAM_UNAVAILABLE,
                "the audit log cannot be written; refused (fail closed)",
                503,
                msg.id,
            ) from None
        return call_id

    def pending_for(self, msg: Message, principal: Principal, call_id: str = "") -> Pending | None:
        """What to expect in the answer to a request that is not a decided call.

        Every request gets one: its answer is matched to it (an answer that matches
        no request is withheld); only answers to :data:`_INSPECTED` methods are
        rewritten.
        """
        if not msg.is_request:
            return None
        return Pending(
            msg.method or "",
            agent=principal.agent,
            request_id=msg.id,
            inspect=msg.method in _INSPECTED,
            call_id=call_id,
            owner=owner_of(principal),
        )

    def record(self, entry: Entry) -> None:
        try:
            self.audit.write(entry)
        except Exception:
            log.exception("audit write failed", extra={"kind": entry.kind})
            self.metrics.decisions.audit_failures.inc()

    async def commit_record(self, entry: Entry) -> None:
        """:meth:`record` through the group commit (for refusals in async code)."""
        try:
            await self.audit.commit(entry)
        except Exception:
            log.exception("audit write failed", extra={"kind": entry.kind})
            self.metrics.decisions.audit_failures.inc()

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
                or self.sessions.stateless.server_version,
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
            if pending.untrusted:
                # its message and data are the tool's text: quarantined like a result
                return await self.outputs.quarantine_error(
                    doc, scope=self.outputs.scope(principal.agent, session_id), tool=pending.tool
                )
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
        if "result" not in doc:
            return doc  # an error answer: no result to filter or guard
        if not isinstance(result, dict):
            # no client accepts it as this method's result, but a lenient one might
            # show it: it cannot be filtered or guarded, so it is withheld
            return withheld(doc["id"], f"the upstream's {pending.method} result is not an object")
        if pending.method in ("initialize", "server/discover"):
            version = server_version_of(result)
            self._learn_version(version)
            if version:
                sid = response_session or session_id
                owned = self.sessions.owned(sid, owner_of(principal)) if sid else None
                if owned is not None:
                    owned.server_version = version
            return doc
        if pending.method == "tools/list":
            tools = result.get("tools")
            if not isinstance(tools, list):
                return withheld(doc["id"], "the upstream's tools/list result has no tool list")
            s = self.sessions.peek(session_id)
            names = Counter(t.get("name") for t in tools if isinstance(t, dict))
            # a name listed twice has two definitions: the one decided and the one a
            # client shows may differ, so neither is listed nor kept
            twice = {n for n, c in names.items() if c > 1}
            for tool in tools:
                if isinstance(tool, dict) and isinstance(tool.get("name"), str) and s is not None:
                    if tool["name"] in twice:
                        s.tools.pop(tool["name"], None)
                    else:
                        s.tools[tool["name"]] = tool
            filtered = gate.filter_tools(
                result,
                lambda t: t.get("name") not in twice and self.may_call(principal, session_id, t),
            )
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
            if pending.untrusted:  # nothing of the upstream's message but its result's facts
                return {"jsonrpc": "2.0", "id": doc["id"], "result": new}
            return doc if new is result else {**doc, "result": new}
        if pending.method == "tools/call" and pending.untrusted:
            return {**doc, "result": gate.mark_untrusted(result)}
        return doc

    async def relay_block(
        self,
        raw: bytes,
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        response_session: str = "",
        *,
        reply: Reply | None = None,
        last_event_id: str = "",
    ) -> tuple[bytes, Pending | None]:
        """What to send on for one upstream SSE block, and the request it answered.

        Never the block's own bytes: what was parsed (:func:`sidecar.sse.parse_block`),
        inspected (:meth:`inspect_message`) and re-encoded, so a client that reads
        the stream differently still sees only what was inspected. Blocks that
        dispatch nothing keep only their ``id`` and ``retry`` (or become a bare
        keep-alive); events of another type than ``message``, data that is not one
        JSON object, and messages :meth:`inspect_message` withholds keep only that.

        ``expect`` is the request a POST stream answers; on GET and legacy streams
        the session's forwarded requests are matched instead. Event ids of a POST
        stream are remembered for its request, so a stream resumed from one
        (``last_event_id``) is known to be that request's.
        """
        block = parse_block(raw)
        if block.id and expect is not None and session_id:
            s = self.sessions.peek(session_id)
            if s is not None:
                s.note_event(block.id, expect[1])
        ev = block.event
        if ev is None:
            return encode_block(block), None
        quiet = encode_block(Block(None, block.id, block.retry, block.comment))
        if ev.event not in ("", "message"):
            log.warning("upstream SSE event of type %r carries no MCP message; withheld", ev.event)
            return quiet, None
        if not ev.data:
            return encode_event(ev), None  # a priming event: an id, no message
        try:
            doc, standard = jsonrpc.loads_answer(ev.data)
        except (ValueError, RecursionError):
            doc, standard = None, False
        if not isinstance(doc, dict):
            # not one JSON-RPC message (not JSON, or a batch nothing asked for):
            # it cannot be inspected, so it is not forwarded
            log.warning("upstream SSE message is not a JSON-RPC object; withheld")
            return quiet, None
        out, answered = await self.inspect_message(
            doc,
            session_id,
            principal,
            expect,
            response_session,
            reply=reply,
            last_event_id=last_event_id,
        )
        if out is None:
            return quiet, None
        data = jsonrpc.dumps_answer(out, standard).decode("utf-8")
        return encode_event(Event(data, ev.event, ev.id, ev.retry)), answered

    async def inspect_message(
        self,
        doc: dict[str, Any],
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        response_session: str = "",
        *,
        reply: Reply | None = None,
        last_event_id: str = "",
    ) -> tuple[dict[str, Any] | None, Pending | None]:
        """One upstream message as it may reach the client (None: withheld), and the
        request it answers.

        A server's notification passes, quarantined when it is sent under a call of
        an untrusted tool (:meth:`untrusted_call_of`), redacted always;
        ``notifications/tools/list_changed`` drops the tools cached for the session.
        A server's request is decided and audited (:meth:`server_request`); a refused
        one is withheld and answered towards the upstream with an error through
        ``reply``. An answer must match the request it answers as any
        client would match it (:func:`sidecar.sessions.id_keys`: ``"1"``, ``1.0`` and
        ``true`` all answer ``1``): it then carries that request's id exactly and is
        rewritten when watched. An answer that matches no request, or several, and a
        message that is both or neither, is withheld.
        """
        if "method" in doc:
            method = doc["method"]
            if not isinstance(method, str) or "result" in doc or "error" in doc:
                log.warning("upstream message is both a request and an answer; withheld")
                return None, None
            if method == "notifications/tools/list_changed":
                self.tools_changed(session_id)
            under = self.untrusted_call_of(doc, session_id, principal, expect, last_event_id)
            if "id" in doc:
                return await self.server_request(doc, session_id, principal, under, reply), None
            if self.outputs is not None:
                # secrets redacted from every server message; progress and log text
                # of an untrusted tool is untrusted output too
                return self.outputs.rewrite_notification(doc, untrusted=under is not None), None
            return doc, None
        if "id" not in doc or ("result" in doc) == ("error" in doc):
            log.warning("upstream message is neither a request, a notification nor an answer")
            return None, None
        pending = self.match_answer(doc["id"], session_id, principal, expect)
        if pending is None:
            log.warning(
                "upstream answer matches no request forwarded on this stream; withheld",
                extra={"session": session_id, "agent": principal.agent},
            )
            return None, None
        doc = {**doc, "id": pending.request_id}
        if pending.inspect:
            doc = await self.rewrite_result(pending, doc, session_id, principal, response_session)
        pending.answered = True
        return doc, pending

    def untrusted_call_of(
        self,
        doc: Mapping[str, Any],
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
        last_event_id: str = "",
    ) -> Pending | None:
        """The call of an untrusted tool a server message is sent under, if any.

        On that call's own POST stream, every message; on any stream, one that names
        the call by ``progressToken`` (also under ``_meta``) or ``requestId``. On a
        stream that is no request's own (standalone GET, legacy SSE), a message
        naming nothing is taken to be sent under any open untrusted call of the
        session (over-quarantine is the safe side); on a resumed stream, under the
        request whose POST stream it resumes, or, when that is unknown, under any
        untrusted call the session still remembers.
        """
        if expect is not None and expect[1].untrusted:
            return expect[1]
        s = self.sessions.peek(session_id) if session_id else None
        if s is None or s.owner != owner_of(principal):
            return None
        origin = s.events.get(last_event_id) if last_event_id else None
        if origin is not None and origin.untrusted:
            return origin
        calls = s.untrusted_calls()
        if not calls:
            return None
        params = doc.get("params")
        params = params if isinstance(params, Mapping) else {}
        meta = params.get("_meta")
        token = params.get("progressToken")
        if token is None and isinstance(meta, Mapping):
            token = meta.get("progressToken")
        tied = tied_to(calls, token, params.get("requestId"))
        if tied is not None or expect is not None:
            return tied  # on a trusted request's own stream, only what names the call
        if origin is not None:
            return None  # the resumed stream is a trusted request's
        if not last_event_id:  # not resumed: the open calls (resumed from where? any call)
            calls = [p for p in calls if not (p.answered or p.expired)]
        return calls[-1] if calls else None

    def allowed_server_requests(self) -> frozenset[str]:
        """The ``serverRequests`` of this server's entry in the active bundle."""
        snap = self.policy.snapshot
        bundle = getattr(snap.compiled, "bundle", None) if snap is not None else None
        server = bundle.server(self.settings.server_name) if bundle is not None else None
        return frozenset(server.server_requests) if server is not None else frozenset()

    async def server_request(
        self,
        doc: dict[str, Any],
        session_id: str,
        principal: Principal,
        under: Pending | None,
        reply: Reply | None,
    ) -> dict[str, Any] | None:
        """A request the server sends the client: decided, audited, then passed or refused.

        ``ping`` passes bare (it carries nothing). ``sampling/createMessage``,
        ``elicitation/create`` and ``roots/list`` pass when the bundle's server entry
        lists ``sampling``, ``elicitation``, ``roots`` in ``serverRequests``; the first
        two never while an untrusted call runs (``under``): their text would reach
        the client's model or user unquarantined. Any other method is refused. Each
        decision is recorded (kind ``server_request``, ``tool`` the method) before it
        is carried out; when that fails the request is refused. A refused request is
        withheld and answered towards the upstream with a -32010 error (``reply``).
        """
        method = str(doc["method"])
        if method == "ping":
            return {"jsonrpc": "2.0", "id": doc["id"], "method": "ping"}
        kind = SERVER_REQUESTS.get(method)
        snap = self.policy.snapshot
        if kind is None:
            allowed, rule = False, "server-requests"
            reason = f"{method[:100]!r} is not a request a server may send through Palisade"
        elif under is not None and method in _TEXT_REQUESTS:
            allowed, rule = False, "untrusted-call"
            reason = (
                f"sent while {under.tool}, whose output is untrusted, runs: its text would "
                "reach the client unquarantined"
            )
        elif kind not in self.allowed_server_requests():
            allowed, rule = False, "server-requests"
            reason = f"the bundle does not let this server send {kind} requests (serverRequests)"
        else:
            allowed, rule = True, "server-requests"
            reason = f"the bundle lets this server send {kind} requests"
        details: dict[str, Any] = {}
        if under is not None:
            details.update({"untrusted_call": under.call_id, "during": under.tool})
        entry = Entry(
            agent=principal.agent,
            tenant=principal.tenant,
            on_behalf_of=principal.on_behalf_of,
            server=self.settings.server_name,
            tool=method[:200],
            session=session_id,
            decision="allow" if allowed else "deny",
            rule_id=rule,
            reason=reason,
            bundle_revision=snap.revision if snap is not None else 0,
            request_id=str(doc["id"])[:200],
            dev_identity=principal.dev_mode,
            kind=SERVER_REQUEST_KIND,
            details=details,
        )
        try:
            await self.audit.commit(entry)
        except Exception:
            log.exception("audit write failed; refusing the server's request")
            self.metrics.decisions.audit_failures.inc()
            allowed, reason = False, "the audit log cannot be written; refused (fail closed)"
        if not allowed:
            log.info(
                "server request refused",
                extra={"method": method[:200], "rule": rule, "session": session_id},
            )
            if reply is not None:
                error = {
                    "code": jsonrpc.POLICY_DENIED,
                    "message": f"Palisade refused {method[:100]}: {reason}",
                    "data": {"decision": "deny", "rule": rule, "reason": reason},
                }
                reply({"jsonrpc": "2.0", "id": doc["id"], "error": error})
            return None
        book = self._answers_book(session_id, principal)
        if book is not None:
            book.ask(doc["id"], method)
        if under is not None:  # roots/list under an untrusted call: none of its params
            return {"jsonrpc": "2.0", "id": doc["id"], "method": method}
        if self.outputs is not None:
            return self.outputs.rewrite_notification(doc, untrusted=False)  # redacted
        return doc

    def _answers_book(self, session_id: str, principal: Principal) -> Session | None:
        """Where the server requests passed to this client are kept: its session, or
        (a server without sessions) a book per principal, bounded."""
        owner = owner_of(principal)
        if session_id:
            s = self.sessions.peek(session_id)
            return s if s is not None and s.owner == owner else None
        book = self._sessionless_asked.get(owner)
        if book is None:
            book = self._sessionless_asked[owner] = Session(owner=owner)
            while len(self._sessionless_asked) > 1024:
                self._sessionless_asked.pop(next(iter(self._sessionless_asked)))
        return book

    async def check_answer(self, msg: Message, principal: Principal, session_id: str) -> None:
        """A client's answer goes upstream only when it answers a request the server sent
        and the sidecar passed to this client, once; it is audited like a call (the
        answer's content as a digest only: it may hold what a user typed). Raises
        :class:`BadMessage` (audited as bad input) for any other."""
        book = self._answers_book(session_id, principal)
        method = book.answered(msg.id) if book is not None else None
        if method is None:
            raise BadMessage(
                jsonrpc.POLICY_DENIED,
                "this answers no request the server sent through Palisade to this client",
                400,
                msg.id,
            )
        doc = msg.body
        answer = doc.get("result") if "result" in doc else {"error": doc.get("error")}
        snap = self.policy.snapshot
        entry = Entry(
            agent=principal.agent,
            tenant=principal.tenant,
            on_behalf_of=principal.on_behalf_of,
            server=self.settings.server_name,
            tool=method,
            session=session_id,
            arguments=answer if isinstance(answer, dict) else {"value": answer},
            decision="allow",
            rule_id="server-requests",
            reason=f"answers the server's {method} request",
            bundle_revision=snap.revision if snap is not None else 0,
            request_id=str(msg.id)[:200],
            dev_identity=principal.dev_mode,
            kind=SERVER_REQUEST_ANSWER_KIND,
            details={"error": "error" in doc},
        )
        try:
            await self.audit.commit(entry, (ALL_FIELDS,))  # every field redacted; the digest stays
        except Exception:
            log.exception("audit write failed; refusing the client's answer")
            self.metrics.decisions.audit_failures.inc()
            raise BadMessage(
                jsonrpc.UPSTREAM_UNAVAILABLE,
                "the audit log cannot be written; the answer is withheld (fail closed)",
                503,
                msg.id,
            ) from None

    def match_answer(
        self,
        answer_id: object,
        session_id: str,
        principal: Principal,
        expect: tuple[object, Pending] | None,
    ) -> Pending | None:
        """The request an answer answers: the stream's own, or one of the session's."""
        if expect is not None:
            rid, pending = expect
            found: Pending | None = pending if id_keys(answer_id) & id_keys(rid) else None
        else:
            s = self.sessions.peek(session_id) if session_id else None
            found = s.match(answer_id) if s is not None else None
            if found is not None and found.owner != owner_of(principal):
                found = None
        return None if found is None or found.expired else found

    def tools_changed(self, session_id: str) -> None:
        """The server's tools changed: definitions cached for decisions and pins go."""
        s = self.sessions.peek(session_id)
        if s is not None:
            s.tools.clear()
        self.sessions.stateless.tools.clear()

    # -- outcomes -------------------------------------------------------------------

    def outcome(
        self,
        pending: Pending | None,
        principal: Principal,
        session_id: str,
        outcome: str,
        reason: str = "",
        **details: Any,
    ) -> asyncio.Task[None] | None:
        """Record what became of a forwarded call, once, linked to its decision record
        by ``details.call_id``. The write is not cancelled with the request's handler
        (a client gone is exactly when it must still be written)."""
        if pending is None or not pending.call_id or pending.outcome_done:
            return None
        pending.outcome_done = True
        started = pending.started
        loop = asyncio.get_running_loop()
        entry = Entry(
            agent=principal.agent,
            tenant=principal.tenant,
            on_behalf_of=principal.on_behalf_of,
            server=self.settings.server_name,
            session=session_id,
            reason=reason or outcome,
            latency_ns=int((loop.time() - started) * 1e9) if started else 0,
            request_id="" if pending.request_id is None else str(pending.request_id),
            dev_identity=principal.dev_mode,
            kind=OUTCOME_KIND,
            # the tool is named in details only: ``tool`` stays the decision records'
            # key (queries by tool list decisions; their outcomes follow by call_id)
            details={
                "call_id": pending.call_id,
                "outcome": outcome,
                "tool": pending.tool or pending.method,
                **details,
            },
        )
        task = loop.create_task(self.commit_record(entry))
        self._outcomes.add(task)
        task.add_done_callback(self._outcomes.discard)
        return task

    async def outcomes_written(self) -> None:
        """Wait for the outcome records being written (tests, shutdown)."""
        while self._outcomes:
            await asyncio.gather(*list(self._outcomes), return_exceptions=True)

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
        task = self.send_upstream(note, headers, path_qs, delay_s=delay_s)
        if delay_s > 0 and session_id:
            waiting = self._resumable.setdefault(session_id, set())
            waiting.add(task)
            task.add_done_callback(waiting.discard)

    def send_upstream(
        self,
        doc: dict[str, Any],
        headers: Mapping[str, str],
        path_qs: str,
        *,
        delay_s: float = 0.0,
    ) -> asyncio.Task[None]:
        """POST one message of the proxy's own to the upstream, in the background, with
        the session headers of the client's request ``headers`` (best effort)."""
        method = doc.get("method")
        fwd = forward_headers(headers)
        own = ("mcp-method", "mcp-name", "last-event-id", "content-type", "accept")
        for k in list(fwd):
            if k.lower() in own or k.lower().startswith("mcp-param-"):
                del fwd[k]
        if isinstance(method, str) and any(k.lower() == "mcp-protocol-version" for k in fwd):
            fwd["Mcp-Method"] = method
        fwd["Content-Type"] = "application/json"
        fwd["Accept"] = "application/json, text/event-stream"

        async def send() -> None:
            try:
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                async with self.upstream.request("POST", path_qs, fwd, jsonrpc.dumps(doc)):
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # best effort; the upstream may be gone too
                log.debug("could not send a message upstream: %s", exc)

        task = asyncio.get_running_loop().create_task(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    def close_listening_streams(self) -> None:
        """At shutdown: end standalone GET streams (they carry no call's answer)."""
        for task in list(self.listening):
            task.cancel()

    def resumed(self, session_id: str) -> None:
        """A client resumed a session's stream: keep its requests' upstream work."""
        for task in list(self._resumable.pop(session_id, ())):
            task.cancel()
