"""What the proxy decides about one message, as pure functions (no I/O, no clock).

- :func:`check_routing_headers`: the 2026-07-28 ``Mcp-Method`` / ``Mcp-Name`` /
  ``Mcp-Param-*`` headers must agree with the body (else -32020, HTTP 400), checked
  before any decision. The comparison rules are the MCP SDK's
  (``mcp.shared.inbound``), ported in :mod:`sidecar.mcp_headers` and tested
  against it, so client, server and proxy agree.
- :func:`tool_call`: a ``tools/call`` message and a principal become a
  :class:`~palisade.policy.types.Call`.
- :func:`risk_from_annotations`: the risk a server declares for its tool.
- :func:`verdict_error`: how a non-allow verdict is answered (see docs/sidecar.md).
- :func:`filter_tools` / :func:`mark_untrusted`: rewrite results on their way back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from palisade.policy.types import Call, Decision, Risk, Verdict
from sidecar import jsonrpc
from sidecar.jsonrpc import BadMessage, Message
from sidecar.mcp_headers import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    MODERN_PROTOCOL_VERSIONS,
    NAME_BEARING_METHODS,
    decode_header_value,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)

#: ``_meta`` key of the protocol version in the 2026-07-28 per-request envelope.
_PROTOCOL_META_KEY = "io.modelcontextprotocol/protocolVersion"
#: ``_meta`` key the proxy sets on results of tools whose output is untrusted.
UNTRUSTED_META_KEY = "dev.palisade/untrustedOutput"
#: ``_meta`` key listing the tools the proxy hid from a ``tools/list`` result.
FILTERED_META_KEY = "dev.palisade/filteredTools"

_DECISION_CODES: Mapping[Decision, int] = {
    Decision.DENY: jsonrpc.POLICY_DENIED,
    Decision.REQUIRE_APPROVAL: jsonrpc.APPROVAL_REQUIRED,
    Decision.THROTTLE: jsonrpc.THROTTLED,
}


def _mismatch(msg: Message, text: str) -> BadMessage:
    return BadMessage(jsonrpc.HEADER_MISMATCH, f"Header mismatch: {text}", 400, msg.id)


def check_routing_headers(
    msg: Message,
    headers: Mapping[str, str],
    raw_headers: Iterable[tuple[str, str]],
    input_schema: Mapping[str, Any] | None,
) -> None:
    """Raise :class:`BadMessage` (-32020) when the routing headers disagree with the body.

    ``headers`` answers lower-case names (a lower-cased dict, or aiohttp's
    case-insensitive multidict); ``raw_headers`` lists every header line, so
    duplicates are seen. Under 2026-07-28 ``Mcp-Method`` is
    required on every message; under earlier revisions the headers are optional,
    but when a client sends them they must still agree with the body, because an
    intermediary may already have acted on them. ``Mcp-Param-*`` headers are
    compared with the arguments whenever the tool's ``inputSchema`` is known
    (seen in the upstream's ``tools/list``).
    """
    dup = find_duplicated_routing_header(raw_headers)
    if dup is not None:
        raise _mismatch(msg, f"{dup} appears more than once")
    if msg.method is None:  # a response to a server request carries no routing headers
        return
    version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
    modern = version in MODERN_PROTOCOL_VERSIONS
    method_header = headers.get(MCP_METHOD_HEADER)
    if modern and method_header is None:
        raise _mismatch(msg, "Mcp-Method is required by protocol revision " + str(version))
    if method_header is not None and method_header != msg.method:
        raise _mismatch(msg, "Mcp-Method does not match the body's method")
    if modern:
        meta = msg.params.get("_meta")
        if (
            isinstance(meta, Mapping)
            and _PROTOCOL_META_KEY in meta
            and meta[_PROTOCOL_META_KEY] != version
        ):
            raise _mismatch(msg, "MCP-Protocol-Version does not match params._meta")
    name_key = NAME_BEARING_METHODS.get(msg.method)
    name_header = headers.get(MCP_NAME_HEADER)
    if name_key is not None:
        body_value = msg.params.get(name_key)
        if name_header is None:
            if modern and body_value is not None:
                raise _mismatch(msg, f"Mcp-Name is required for {msg.method}")
        elif decode_header_value(name_header) != body_value:
            raise _mismatch(msg, f"Mcp-Name does not match the body's {name_key!r}")
    elif name_header is not None:
        raise _mismatch(msg, f"Mcp-Name is not defined for {msg.method}")
    if msg.method == "tools/call" and input_schema is not None:
        args = msg.params.get("arguments")
        problem = validate_mcp_param_headers(
            input_schema, args if isinstance(args, Mapping) else {}, headers
        )
        if problem is not None:
            raise _mismatch(msg, problem)


def risk_from_annotations(tool: Mapping[str, Any]) -> Risk:
    """The risk an upstream declares for one of its tools (MCP ``ToolAnnotations``).

    The spec's defaults apply when a hint is absent: ``readOnlyHint`` false and
    ``destructiveHint`` true, so a tool that says nothing counts as destructive.
    """
    ann = tool.get("annotations")
    ann = ann if isinstance(ann, Mapping) else {}
    if ann.get("readOnlyHint") is True:
        return Risk.READ
    if ann.get("destructiveHint", True) is False:
        return Risk.WRITE
    return Risk.DESTRUCTIVE


def tool_call(
    msg: Message,
    *,
    agent: str,
    server: str,
    session: str,
    on_behalf_of: str,
    server_version: str,
    labels: Mapping[str, str],
    declared_risk: Risk | None,
) -> Call:
    """The engine's view of a decided request; bad params raise :class:`BadMessage` (-32602).

    A ``tools/call`` is a call of its tool with its arguments. ``resources/read`` and
    ``prompts/get`` (decided when the bundle registers them as tools of the server,
    see :func:`decided_target`) are calls of a tool named after the method, with
    ``{"uri": ...}`` or ``{"name": ..., "arguments": {...}}`` as arguments.
    """
    name, args = decided_target(msg)
    return Call(
        agent=agent,
        server=server,
        tool=name,
        arguments=args,
        session=session,
        on_behalf_of=on_behalf_of,
        server_version=server_version,
        labels=labels,
        server_declared_risk=declared_risk,
        request_id="" if msg.id is None else str(msg.id),
    )


def _invalid(msg: Message, what: str) -> BadMessage:
    return BadMessage(jsonrpc.INVALID_PARAMS, f"Invalid params: {what}", 400, msg.id)


def decided_target(msg: Message) -> tuple[str, dict[str, Any]]:
    """The tool name and arguments the engine decides for ``msg`` (see :func:`tool_call`)."""
    params = msg.params
    if msg.method == "resources/read":
        uri = params.get("uri")
        if not isinstance(uri, str) or not uri:
            raise _invalid(msg, "resources/read needs a uri")
        return msg.method, {"uri": uri}
    args = params.get("arguments", {})
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise _invalid(msg, "arguments must be an object")
    name = params.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(msg, f"{msg.method} needs a name")
    if msg.method == "prompts/get":
        return msg.method, {"name": name, "arguments": args}
    return name, args


def verdict_data(verdict: Verdict) -> dict[str, Any]:
    """The machine-readable part of a refusal, the same for every transport."""
    return {
        "decision": str(verdict.decision),
        "rule": verdict.rule_id,
        "reason": verdict.reason,
        "approval_id": verdict.approval_id or None,
        "retry_after": round(verdict.retry_after_s, 3) if verdict.retry_after_s else None,
        "bundle_revision": verdict.bundle_revision,
    }


def verdict_error(request_id: jsonrpc.RequestId, verdict: Verdict, tool: str) -> dict[str, Any]:
    """A JSON-RPC error answering a ``tools/call`` the policy did not allow."""
    code = _DECISION_CODES.get(verdict.decision, jsonrpc.POLICY_DENIED)
    if verdict.decision is Decision.REQUIRE_APPROVAL:
        text = (
            f"Palisade: calling {tool!r} needs a human's approval (approval id "
            f"{verdict.approval_id}): {verdict.reason}"
        )
    elif verdict.decision is Decision.THROTTLE:
        text = (
            f"Palisade: {tool!r} is rate limited; retry after "
            f"{verdict.retry_after_s:.3g}s: {verdict.reason}"
        )
    else:
        text = f"Palisade denied {tool!r} (rule {verdict.rule_id}): {verdict.reason}"
    return jsonrpc.error_response(request_id, code, text, verdict_data(verdict))


def filter_tools(
    result: Mapping[str, Any], may_call: Callable[[Mapping[str, Any]], bool]
) -> dict[str, Any]:
    """A ``tools/list`` result keeping only the tools ``may_call`` admits.

    The names of hidden tools are listed under ``_meta`` so a human reading the
    exchange sees that Palisade, not the server, removed them.
    """
    tools = result.get("tools")
    if not isinstance(tools, list):
        return dict(result)
    kept: list[Any] = []
    hidden: list[str] = []
    for tool in tools:
        if isinstance(tool, Mapping) and may_call(tool):
            kept.append(tool)
        else:
            hidden.append(str(tool.get("name", "")) if isinstance(tool, Mapping) else "")
    out = dict(result)
    out["tools"] = kept
    if "cacheScope" in out:
        # 2026-07-28 cache hints: this list is for one agent; a shared cache must not reuse it
        out["cacheScope"] = "private"
    if hidden:
        meta = dict(out.get("_meta") or {})
        meta[FILTERED_META_KEY] = hidden
        out["_meta"] = meta
    return out


def listable(verdict: Verdict) -> bool:
    """Whether a dry-run verdict (with ``explain``) leaves a tool in ``tools/list``.

    The dry run has no arguments, so a denial that came from (or past) a rule's
    ``when`` condition could go the other way for a real call: such tools stay
    listed, and the call itself is decided when it is made. Budget denials are
    temporary and keep the tool listed too.
    """
    if verdict.decision is not Decision.DENY:
        return True
    if verdict.rule_id.startswith("budget/") or verdict.rule_id == "failure":
        return True
    return any("'when'" in t.detail for t in verdict.explanation)


def mark_untrusted(result: Mapping[str, Any]) -> dict[str, Any]:
    """A ``CallToolResult`` flagged as untrusted output (for the host and the quarantine)."""
    out = dict(result)
    meta = dict(out.get("_meta") or {})
    meta[UNTRUSTED_META_KEY] = True
    out["_meta"] = meta
    return out
