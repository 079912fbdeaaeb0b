"""The output guard: what a ``tools/call`` result becomes on its way back to the agent.

:meth:`OutputGuard.rewrite` is called by the proxy for every allowed ``tools/call``
answer:

1. **Redaction** (every tool, when ``redact`` is on): secrets in the result are
   replaced with ``[REDACTED]`` (:mod:`sidecar.quarantine.redact`).
2. **Quarantine** (tools marked ``untrustedOutput`` in the registry, when an
   extractor is configured): the raw text is stored under a handle
   (:class:`~sidecar.quarantine.store.QuarantineStore`) and the agent receives
   a new result holding only the handle and validated facts: a short text
   rendering, ``structuredContent`` (``result``, ``handle``, ``facts``) and
   ``_meta["dev.palisade/quarantine"]`` (handle, extractor, counts). The
   upstream's content, ``structuredContent`` and ``_meta`` are all replaced.
   If the extractor fails, the deterministic one is used and the failure is
   named in ``_meta``; the raw text never passes (fail closed).

3. **Handles** (quarantined facts): pod, namespace, deployment and image names
   reach the agent as per-session handles (``$POD1``), error types as words of a
   closed vocabulary (:mod:`sidecar.quarantine.handles`); when the agent passes a
   handle as a tool argument, :meth:`OutputGuard.resolve_arguments` puts the real
   value back before the call is decided.

``tools/list`` declares :data:`QUARANTINED_OUTPUT_SCHEMA` as the ``outputSchema``
of quarantined tools (:meth:`OutputGuard.list_result`), since clients validate
``structuredContent`` against it; ``structuredContent`` also carries ``result``
(the rendering), matching the ``{"result": string}`` schema SDK servers declare
for text tools, for clients that listed tools before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from sidecar import jsonrpc
from sidecar.jsonrpc import BadMessage, Message
from sidecar.quarantine.extract import Extractor, ExtractorError, KubernetesExtractor
from sidecar.quarantine.facts import render, validate
from sidecar.quarantine.handles import (
    AGENT_FACTS_JSON_SCHEMA,
    HandleTable,
    UnknownHandle,
    substitute,
    to_handles,
)
from sidecar.quarantine.redact import redact_result, redact_value
from sidecar.quarantine.store import QuarantineStore

log = logging.getLogger(__name__)

#: ``_meta`` key of the quarantine report on a rewritten result.
QUARANTINE_META_KEY: Final = "dev.palisade/quarantine"
#: ``_meta`` key counting secrets redacted from a result.
REDACTED_META_KEY: Final = "dev.palisade/redacted"
#: Same key as :data:`sidecar.gate.UNTRUSTED_META_KEY` (kept on quarantined results).
UNTRUSTED_META_KEY: Final = "dev.palisade/untrustedOutput"
#: ``_meta`` key set when a result was withheld because it could not be inspected.
WITHHELD_META_KEY: Final = "dev.palisade/withheld"
#: What replaces the ``data`` of a log message sent while an untrusted tool runs.
WITHHELD_LOG_DATA: Final = "[withheld: logged by a tool whose output is untrusted]"
#: What a progress notification of an untrusted tool keeps.
_PROGRESS_KEYS: Final = ("progressToken", "progress", "total")
#: The ``outputSchema`` ``tools/list`` declares for a quarantined tool.
QUARANTINED_OUTPUT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "result": {"type": "string"},
        "handle": {"type": "string", "pattern": "^\\$VAR[0-9]+$"},
        "facts": AGENT_FACTS_JSON_SCHEMA,
    },
    "required": ["result", "handle", "facts"],
}


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (valid in JSON, not in UTF-8) replaced by U+FFFD.

    One such character must not make the whole output uninspectable.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def raw_text(result: dict[str, Any]) -> tuple[str, int]:
    """The text an untrusted result carries, and how many non-text items it had.

    Text content and embedded text resources are joined; when there is no text,
    the strings of ``structuredContent`` are (SDK servers send both, the same data).
    """
    parts: list[str] = []
    other = 0
    for item in result.get("content") or []:
        if not isinstance(item, dict):
            other += 1
        elif item.get("type") == "text" and isinstance(item.get("text"), str):
            parts.append(item["text"])
        elif item.get("type") == "resource" and isinstance(
            (item.get("resource") or {}).get("text"), str
        ):
            parts.append(item["resource"]["text"])
        else:
            other += 1
    if not parts and result.get("structuredContent") is not None:
        _strings(result["structuredContent"], parts)
    return "\n".join(parts), other


def _strings(value: Any, out: list[str]) -> None:
    """Every string (and number) in a JSON value, one per entry, keys included."""
    if isinstance(value, dict):
        for k, v in value.items():
            out.append(str(k))
            _strings(v, out)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
    elif value is not None:
        out.append(str(value))


@dataclass
class OutputGuard:
    """Redacts every result; quarantines untrusted ones (see the module docstring)."""

    store: QuarantineStore = field(default_factory=QuarantineStore)
    #: ``None``: untrusted results are only marked, not quarantined.
    extractor: Extractor | None = field(default_factory=KubernetesExtractor)
    redact: bool = True
    fallback: Extractor = field(default_factory=KubernetesExtractor)
    #: The per-session handles of identifiers shown in quarantined facts.
    handles: HandleTable = field(default_factory=HandleTable)

    def list_result(
        self, result: dict[str, Any], untrusted: Callable[[str], bool]
    ) -> dict[str, Any]:
        """A ``tools/list`` result declaring, for quarantined tools, what the agent will get.

        The server's ``outputSchema`` describes the raw output, which the agent never
        sees; clients validate ``structuredContent`` against the declared schema.
        """
        tools = result.get("tools")
        if self.extractor is None or not isinstance(tools, list):
            return result
        changed = False
        out: list[Any] = []
        for tool in tools:
            if isinstance(tool, dict) and untrusted(str(tool.get("name", ""))):
                tool = {**tool, "outputSchema": QUARANTINED_OUTPUT_SCHEMA}
                changed = True
            out.append(tool)
        return {**result, "tools": out} if changed else result

    @staticmethod
    def scope(agent: str, session_id: str) -> str:
        """The store scope of one agent's MCP session (``""``: the stateless transport)."""
        return f"{agent}\x00{session_id}"

    def end_session(self, agent: str, session_id: str) -> None:
        """Forget a session's quarantined outputs (it was deleted or its stream closed)."""
        self.store.drop_scope(self.scope(agent, session_id))
        self.handles.drop_scope(self.scope(agent, session_id))

    def resolve_arguments(self, msg: Message, agent: str, session_id: str) -> list[str]:
        """Put the real values back for the handles in a ``tools/call``'s arguments.

        Called before the call is decided, so the policy, the audit and the
        upstream all see the real value. ``msg.body`` is updated in place (it is
        what is forwarded); returns the handles resolved. A handle this session
        never received is refused (:class:`~sidecar.jsonrpc.BadMessage`, -32602).
        """
        params = msg.body.get("params")
        if not isinstance(params, dict) or "arguments" not in params:
            return []
        try:
            new, used = substitute(self.handles, self.scope(agent, session_id), params["arguments"])
        except UnknownHandle as exc:
            raise BadMessage(
                jsonrpc.INVALID_PARAMS,
                f"Invalid params: {exc.handle} is not a handle this session received",
                400,
                msg.id,
            ) from None
        if used:
            msg.body["params"] = {**params, "arguments": new}
        return used

    def rewrite_error(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A JSON-RPC error answering a ``tools/call``, its secrets redacted (``doc`` if none).

        An upstream's error message can quote what failed (a connection string, a
        header); the code is kept.
        """
        error = doc.get("error")
        if not self.redact or not isinstance(error, dict):
            return doc
        new, n = redact_value({k: v for k, v in error.items() if k != "code"})
        if not n:
            return doc
        return {**doc, "error": {**error, **new}}

    async def quarantine_error(
        self, doc: dict[str, Any], *, scope: str, tool: str
    ) -> dict[str, Any]:
        """A JSON-RPC error answering an untrusted tool's call, as the agent may see it.

        Its ``message`` and ``data`` are the tool's text (whoever can make the tool
        fail writes them), so they are quarantined like a result: stored under a
        handle, and the agent gets the code (an integer; any other becomes -32603),
        a fixed message naming the handle and the validated facts, and no ``data``.
        Without an extractor the error is only redacted (:meth:`rewrite_error`).
        """
        if self.extractor is None:
            return self.rewrite_error(doc)
        error = doc.get("error")
        code = error.get("code") if isinstance(error, dict) else None
        if not isinstance(code, int) or isinstance(code, bool):
            code = jsonrpc.INTERNAL_ERROR
        try:
            parts: list[str] = []
            if isinstance(error, dict):
                if isinstance(error.get("message"), str):
                    parts.append(error["message"])
                _strings(error.get("data"), parts)
            text = clean_text("\n".join(parts))
            redacted = 0
            if self.redact:
                text, redacted = redact_value(text)
            handle, facts, _ = await self._extract(text, scope, tool, redacted, 0)
            message = f"Palisade quarantined the error of {tool} as {handle}. " + render(facts)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # fail closed: never the unread text
            log.error(
                "error could not be inspected; withheld",
                extra={"tool": tool, "error": type(exc).__name__},
            )
            message = f"Palisade withheld the error of {tool}: it could not be inspected."
        return {"jsonrpc": "2.0", "id": doc.get("id"), "error": {"code": code, "message": message}}

    def redact_content(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``resources/read`` or ``prompts/get``, its secrets redacted.

        A resource's contents (a kubeconfig, a ``.env`` file) or a prompt's messages
        reach the model just as a tool's output does. ``doc`` itself when nothing
        was found; an error answer when the result could not be inspected.
        """
        result = doc.get("result")
        if not self.redact or not isinstance(result, dict):
            return doc
        try:
            new, n = redact_value(result)
        except Exception as exc:  # fail closed: never the unread content
            log.error(
                "result could not be inspected; withheld", extra={"error": type(exc).__name__}
            )
            return {
                "jsonrpc": "2.0",
                "id": doc.get("id"),
                "error": {"code": -32603, "message": "the result could not be inspected; withheld"},
            }
        if not n:
            return doc
        meta = dict(new.get("_meta") or {})
        meta[REDACTED_META_KEY] = n
        return {**doc, "result": {**new, "_meta": meta}}

    def quarantine_notification(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A notification sent while an untrusted tool runs, without its free text.

        Kept by an allow-list: progress keeps ``progressToken``, ``progress`` and
        ``total`` (its ``message`` goes); a log message keeps its ``level`` and gets
        :data:`WITHHELD_LOG_DATA` as ``data`` (the ``logger`` name is the tool's
        text too); a cancellation keeps ``requestId``; any other notification
        loses its params; nothing else of the message is kept either. Requests the
        server makes (they carry an ``id``) are decided by the proxy
        (:meth:`sidecar.core.ProxyCore.server_request`) and pass here unchanged.
        """
        params = doc.get("params")
        if self.extractor is None or "id" in doc:
            return doc
        if not isinstance(params, dict):
            params = {}
        method = doc.get("method")
        if method == "notifications/progress":
            kept = {k: params[k] for k in _PROGRESS_KEYS if k in params}
        elif method == "notifications/message":
            kept = {"level": params.get("level", "info"), "data": WITHHELD_LOG_DATA}
        elif method == "notifications/cancelled":
            kept = {k: params[k] for k in ("requestId",) if k in params}
        else:
            kept = {}
        out: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if kept or "params" in doc:
            out["params"] = kept
        return doc if out == doc else out

    def rewrite_notification(self, doc: dict[str, Any], *, untrusted: bool) -> dict[str, Any]:
        """A message the server sends on a stream (``doc`` itself when nothing changes).

        Under an untrusted call its free text is withheld
        (:meth:`quarantine_notification`); every one, trusted or not, has its
        secrets redacted. Fails closed: params that cannot be inspected are dropped.
        """
        if untrusted:
            doc = self.quarantine_notification(doc)
        params = doc.get("params")
        if not self.redact or not isinstance(params, dict):
            return doc
        # the client's own progress token, echoed: the client finds its request by it
        # (a string one would be taken for a credential, its key ending in "token")
        rest = (
            {k: v for k, v in params.items() if k != "progressToken"}
            if "progressToken" in params
            else params
        )
        try:
            new, n = redact_value(rest)
        except Exception as exc:  # fail closed: never the unread text
            log.error(
                "notification could not be inspected; params withheld",
                extra={"error": type(exc).__name__},
            )
            return {**doc, "params": {}}
        if not n:
            return doc
        if "progressToken" in params:
            new = {"progressToken": params["progressToken"], **new}
        return {**doc, "params": new}

    def watches(self, untrusted: bool) -> bool:
        """Whether the proxy must hand this call's answer to :meth:`rewrite`."""
        return self.redact or (untrusted and self.extractor is not None)

    async def rewrite(
        self, result: dict[str, Any], *, untrusted: bool, scope: str, tool: str
    ) -> dict[str, Any]:
        """The result the agent gets (``result`` itself when nothing changes).

        Fails closed: if inspecting the result fails for any reason, the agent gets
        an error result saying the output was withheld, never the output.
        """
        try:
            return await self._rewrite(result, untrusted=untrusted, scope=scope, tool=tool)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # the type only: the message or traceback could quote the output
            log.error(
                "output could not be inspected; withheld",
                extra={"tool": tool, "error": type(exc).__name__},
            )
            text = f"Palisade withheld the output of {tool}: it could not be inspected."
            return {
                "content": [{"type": "text", "text": text}],
                "isError": True,
                "_meta": {UNTRUSTED_META_KEY: untrusted, WITHHELD_META_KEY: True},
            }

    async def _rewrite(
        self, result: dict[str, Any], *, untrusted: bool, scope: str, tool: str
    ) -> dict[str, Any]:
        redacted = 0
        if self.redact:
            result, redacted = redact_result(result)
        if untrusted and self.extractor is not None:
            return await self._quarantine(result, scope, tool, redacted)
        if redacted:
            meta = dict(result.get("_meta") or {})
            meta[REDACTED_META_KEY] = redacted
            result = {**result, "_meta": meta}
        if untrusted:
            meta = dict(result.get("_meta") or {})
            meta[UNTRUSTED_META_KEY] = True
            result = {**result, "_meta": meta}
        return result

    async def _quarantine(
        self, result: dict[str, Any], scope: str, tool: str, redacted: int
    ) -> dict[str, Any]:
        text, other = raw_text(result)
        handle, facts, report = await self._extract(clean_text(text), scope, tool, redacted, other)
        rendering = f"Palisade quarantined the output of {tool} as {handle}. " + render(facts)
        out: dict[str, Any] = {
            "content": [{"type": "text", "text": rendering}],
            "structuredContent": {
                "result": rendering,
                "handle": handle,
                "facts": facts,
            },
            "_meta": {UNTRUSTED_META_KEY: True, QUARANTINE_META_KEY: report},
        }
        if result.get("isError") is True:
            out["isError"] = True
        return out

    async def _extract(
        self, text: str, scope: str, tool: str, redacted: int, other: int
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Store ``text`` under a handle; its validated facts (handle form) and report."""
        assert self.extractor is not None
        entry = self.store.put(scope, tool, text)
        used = self.extractor
        report: dict[str, Any] = {}
        try:
            candidate = await used.extract(text, tool=tool)
        except ExtractorError as exc:
            log.warning(
                "quarantine extractor failed; using the deterministic one",
                extra={"tool": tool, "extractor": used.name, "error": str(exc)},
            )
            report["extractorError"] = str(exc)
            used = self.fallback
            candidate = await used.extract(text, tool=tool)
        checked = validate(candidate)
        facts, unbound = to_handles(self.handles, scope, checked.facts)
        report.update(
            {
                "handle": entry.handle,
                "extractor": used.name,
                "droppedItems": checked.dropped + unbound,
                "droppedContent": other,
                "redacted": redacted,
                "bytes": entry.size,
                "truncated": entry.truncated,
            }
        )
        return entry.handle, facts, report

    async def close(self) -> None:
        for ex in (self.extractor, self.fallback):
            closer = getattr(ex, "close", None)
            if closer is not None:
                await closer()
