"""JSON-RPC 2.0 as the proxy sees it: parse and bound one message, build error answers.

Pure functions, no I/O. The proxy reads a body, hands the bytes to
:func:`parse_message` and gets a :class:`Message` or a :class:`BadMessage` that
already says which JSON-RPC error and HTTP status to answer with::

    BadMessage                 code, message, http_status, request_id
      parse error   -32700     400  not JSON, not UTF-8
      invalid req.  -32600     400  not an object, a batch (array), no method
      too deep      -32600     400  nesting beyond the configured depth
      odd method    -32600     400  a method with whitespace or control characters, or
                                    one that differs from a known MCP method only by
                                    case, width or such characters (``Tools/Call``)
      too large     -32600     413  body over the configured size (raised by the adapter)

Palisade's own answers use the implementation-defined band -32000..-32019 that
the 2026-07-28 revision leaves to implementations (the SDK already uses -32000
and -32001; -32002 is retired). See ``docs/sidecar.md`` "Denials".
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: MCP 2026-07-28: HTTP headers disagree with the body (or are missing/duplicated).
HEADER_MISMATCH = -32020

#: Policy said deny (or the registry, or a fail-closed error).
POLICY_DENIED = -32010
#: Policy said require_approval: ``data.approval_id`` is what a human approves.
APPROVAL_REQUIRED = -32011
#: A rate limit said throttle: retry after ``data.retry_after`` seconds.
THROTTLED = -32012
#: A configured limit was exceeded (body, depth, stream idle, upstream time).
LIMIT_EXCEEDED = -32013
#: The upstream MCP server could not be reached or failed.
UPSTREAM_UNAVAILABLE = -32014
#: The caller could not be authenticated or may not use this server.
UNAUTHORIZED = -32015

RequestId = str | int | None

#: Methods the proxy decides; they must come as requests (with an id).
DECIDED_METHODS = frozenset({"tools/call"})

#: Every method of the MCP revisions the proxy speaks (2024-11-05 .. 2026-07-28), both
#: directions. A method that is none of these but folds (:func:`fold_method`) to one
#: of them is refused: an upstream that matches methods loosely would run it, and
#: the proxy, which matches exactly, would have forwarded it undecided.
MCP_METHODS = frozenset(
    {
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "resources/subscribe",
        "resources/unsubscribe",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "roots/list",
        "sampling/createMessage",
        "elicitation/create",
        "subscriptions/listen",
        "tasks/get",
        "tasks/result",
        "tasks/list",
        "tasks/cancel",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/message",
        "notifications/roots/list_changed",
        "notifications/tools/list_changed",
        "notifications/prompts/list_changed",
        "notifications/resources/list_changed",
        "notifications/resources/updated",
        "notifications/subscriptions/acknowledged",
        "notifications/elicitation/complete",
        "notifications/tasks/status",
    }
)


def fold_method(method: str) -> str:
    """A method name as the loosest reader could take it: compatibility forms folded
    (NFKC: fullwidth letters), whitespace, control, format and unassigned characters
    dropped, case folded."""
    folded = unicodedata.normalize("NFKC", method)
    kept = (c for c in folded if not c.isspace() and unicodedata.category(c)[0] not in ("C", "Z"))
    return "".join(kept).casefold()


_FOLDED_METHODS = {fold_method(m): m for m in MCP_METHODS}


def method_problem(method: str) -> str | None:
    """Why ``method`` is refused before anything acts on it, or None.

    A method name never needs whitespace, control or format characters (nor lone
    surrogates); and one that only differs from an MCP method by such characters,
    case or character width is an attempt to pass that method off as another.
    """
    if method in MCP_METHODS:
        return None
    shown = ascii(method)[:80]
    known = _FOLDED_METHODS.get(fold_method(method))
    if known is not None:
        return f"the method {shown} is not {known!r}: MCP methods are matched exactly"
    if any(c.isspace() or unicodedata.category(c)[0] in ("C", "Z") for c in method):
        return f"the method {shown} has whitespace or control characters"
    return None


@dataclass(frozen=True, slots=True)
class Message:
    """One well-formed JSON-RPC message from the client."""

    body: dict[str, Any]

    @property
    def method(self) -> str | None:
        m = self.body.get("method")
        return m if isinstance(m, str) else None

    @property
    def id(self) -> RequestId:
        rid = self.body.get("id")
        return rid if isinstance(rid, str | int) and not isinstance(rid, bool) else None

    @property
    def is_request(self) -> bool:
        return self.method is not None and "id" in self.body

    @property
    def is_notification(self) -> bool:
        return self.method is not None and "id" not in self.body

    @property
    def is_response(self) -> bool:
        return self.method is None and ("result" in self.body or "error" in self.body)

    @property
    def params(self) -> Mapping[str, Any]:
        p = self.body.get("params")
        return p if isinstance(p, dict) else {}


@dataclass(frozen=True, slots=True)
class BadMessage(Exception):
    """A message refused before any decision; carries the answer to give."""

    code: int
    message: str
    http_status: int = 400
    request_id: RequestId = None

    def __str__(self) -> str:
        return self.message


def depth_of(value: Any, limit: int) -> int:
    """Nesting depth of a decoded JSON value, stopping early once ``limit`` is passed.

    Iterative, so a hostile document cannot exhaust the interpreter's stack.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_message(raw: bytes, *, max_depth: int) -> Message:
    """Decode one JSON-RPC message; raise :class:`BadMessage` for anything else.

    Batches are refused outright: one message per POST is what Streamable HTTP
    allows from 2025-06-18 on, and a batch would let one checked call carry
    unchecked siblings.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage(PARSE_ERROR, "Parse error: the body is not UTF-8") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BadMessage(
            INVALID_REQUEST, f"Invalid Request: JSON nested deeper than {max_depth} levels"
        ) from None
    except ValueError as exc:
        raise BadMessage(PARSE_ERROR, f"Parse error: {exc.args[0] if exc.args else exc}") from None
    if isinstance(doc, list):
        raise BadMessage(
            INVALID_REQUEST,
            "Invalid Request: JSON-RPC batches are not accepted; send one message per request",
        )
    if not isinstance(doc, dict):
        raise BadMessage(INVALID_REQUEST, "Invalid Request: the body must be a JSON-RPC object")
    msg = Message(doc)
    if depth_of(doc, max_depth) > max_depth:
        raise BadMessage(
            INVALID_REQUEST,
            f"Invalid Request: JSON nested deeper than {max_depth} levels",
            request_id=msg.id,
        )
    if doc.get("jsonrpc") != "2.0":
        raise BadMessage(
            INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', request_id=msg.id
        )
    if "method" in doc and not isinstance(doc["method"], str):
        raise BadMessage(
            INVALID_REQUEST, 'Invalid Request: "method" must be a string', request_id=msg.id
        )
    problem = method_problem(doc["method"]) if "method" in doc else None
    if problem is not None:
        raise BadMessage(INVALID_REQUEST, f"Invalid Request: {problem}", request_id=msg.id)
    if "method" not in doc and not msg.is_response:
        raise BadMessage(
            INVALID_REQUEST,
            "Invalid Request: neither a request, a notification nor a response",
            request_id=msg.id,
        )
    if "id" in doc and msg.id is None and not (doc["id"] is None and msg.is_response):
        # MCP: request ids are strings or integers, never null
        raise BadMessage(INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer')
    if msg.method in DECIDED_METHODS and "id" not in doc:
        # a notification would reach the server without a decision
        raise BadMessage(
            INVALID_REQUEST, f"Invalid Request: {msg.method} must be a request with an id"
        )
    if "params" in doc and not isinstance(doc["params"], dict | list):
        raise BadMessage(
            INVALID_REQUEST, 'Invalid Request: "params" must be an object', request_id=msg.id
        )
    return msg


def error_response(
    request_id: RequestId, code: int, message: str, data: Any = None
) -> dict[str, Any]:
    """A JSON-RPC error object answering ``request_id``."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": err}


_ANSWER_DECODER = msgspec.json.Decoder()


def loads_answer(text: str | bytes) -> tuple[Any, bool]:
    """Parse an upstream answer for inspection: ``(doc, standard)``.

    The caller forwards what it inspected, re-serialised by :func:`dumps_answer`,
    never ``text`` itself: a text whose objects repeat a key carries values the
    parsed document does not (parsers keep the last), and forwarding it would let
    the earlier ones past redaction unseen.

    msgspec parses standard JSON exactly (integers of any size included) at about
    twice the standard library's speed; what it refuses but Python accepts
    (``NaN``, ``Infinity``, lone surrogates, numbers beyond a double) is parsed by
    the standard library and ``standard`` is False. Raises ``ValueError`` for text
    that is not JSON.
    """
    try:
        return _ANSWER_DECODER.decode(text), True
    except msgspec.MsgspecError:
        return json.loads(text), False


def dumps_answer(doc: Any, standard: bool) -> bytes:
    """Serialise a document parsed by :func:`loads_answer` (orjson when it can)."""
    if standard:
        try:
            return orjson.dumps(doc)
        except TypeError:  # orjson.JSONEncodeError: integers beyond 64 bits
            pass
    return dumps(doc)


def dumps(doc: Any) -> bytes:
    """Compact JSON bytes, as sent on the wire.

    ASCII with escapes: a JSON string may legally carry a lone surrogate
    (``"\\ud800"``), which has no UTF-8 encoding; escaped, it passes unchanged.
    """
    return json.dumps(doc, separators=(",", ":")).encode("ascii")
