"""HTTP plumbing shared by the transports: which headers cross, and how answers are sent.

Pure helpers over aiohttp objects; the transports (:mod:`sidecar.streamable`,
:mod:`sidecar.legacy`) and :class:`~sidecar.core.ProxyCore` use them at their edges.

One value per field. A header or query parameter that decides identity, session
or routing (:data:`SINGLE_HEADERS`, ``Mcp-Param-*``, :data:`SESSION_QUERY_PARAMS`)
and arrives more than once is refused (:func:`duplicated_header`,
:func:`duplicated_query_param`, checked for every request by the app's
middleware), since the proxy reading the first copy and the upstream another is
how a check is bypassed. :func:`forward_headers` then sends the upstream one
line per name: the very value the proxy read (the first), never a second copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from sidecar import jsonrpc

#: Request headers passed to the upstream (plus every ``Mcp-Param-*``).
FORWARD_REQUEST_HEADERS = frozenset(
    {
        "accept",
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "mcp-method",
        "mcp-name",
        "traceparent",
        "tracestate",
        "baggage",
    }
)
#: Response headers passed back to the client.
FORWARD_RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "cache-control",
        "allow",
        "retry-after",
    }
)


#: Request headers that decide identity, session, routing or how the body is read:
#: each must come at most once (RFC 9110 5.3 lets only list-valued fields repeat).
SINGLE_HEADERS = frozenset(
    {
        "authorization",
        "origin",
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-method",
        "mcp-name",
        "last-event-id",
    }
)
#: The ``Mcp-Param-*`` family (SEP-2243): each name at most once as well.
PARAM_HEADER_PREFIX = "mcp-param-"
#: Query parameters naming the legacy HTTP+SSE session (Python SDK, TypeScript SDK).
SESSION_QUERY_PARAMS = ("session_id", "sessionId")


def _field_key(name: str) -> str:
    # Some servers (CGI/WSGI environments, several proxies) read ``_`` as ``-``:
    # ``Mcp-Param-A_B`` and ``Mcp-Param-A-B`` are one field to them.
    return name.strip().lower().replace("_", "-")


def duplicated_header(raw_headers: Iterable[tuple[str, str]]) -> str | None:
    """The name of a :data:`SINGLE_HEADERS` or ``Mcp-Param-*`` header given more than
    once (names compared case-insensitively, ``_`` as ``-``), or None."""
    seen: set[str] = set()
    for name, _ in raw_headers:
        key = _field_key(name)
        if key in SINGLE_HEADERS or key.startswith(PARAM_HEADER_PREFIX):
            if key in seen:
                return key
            seen.add(key)
    return None


def session_query_values(raw_query: str) -> list[str]:
    """Every value of a session parameter in a raw query string, as the loosest
    server could read it: ``&`` and ``;`` both separate, names are percent-decoded
    and compared case-insensitively, ``session_id`` and ``sessionId`` are one."""
    wanted = {p.lower() for p in SESSION_QUERY_PARAMS}
    values: list[str] = []
    for part in raw_query.replace(";", "&").split("&"):
        name, _, value = part.partition("=")
        if unquote_plus(name).strip().lower() in wanted:
            values.append(unquote_plus(value))
    return values


def duplicated_query_param(raw_query: str) -> bool:
    """Whether the session query parameter is given more than once (see above)."""
    return len(session_query_values(raw_query)) > 1


def _join(
    headers: Iterable[tuple[str, str]], allowed: frozenset[str], prefix: str
) -> dict[str, str]:
    out: dict[str, str] = {}
    first: dict[str, str] = {}  # lower-cased name -> the spelling it first came in
    for name, value in headers:
        key = name.lower()
        if key not in allowed and not (prefix and key.startswith(prefix)):
            continue
        if key not in first:
            first[key] = name
            out[name] = value
        elif key not in SINGLE_HEADERS and not key.startswith(PARAM_HEADER_PREFIX):
            out[first[key]] += ", " + value  # a list-valued field (RFC 9110 5.3)
        # a repeated single-valued field keeps its first value: the one the proxy read
    return out


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers the upstream may see: never ``Authorization`` or cookies.

    One entry per name (spelled as it first came): a single-valued field keeps the value the
    proxy itself read (the first; a repeated one was refused before, see
    :func:`duplicated_header`), a list-valued one (``Accept``) its lines joined.
    """
    return _join(headers.items(), FORWARD_REQUEST_HEADERS, PARAM_HEADER_PREFIX)


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return _join(headers.items(), FORWARD_RESPONSE_HEADERS, "")


class _WholeAnswer(web.StreamResponse):
    # Headers wait for the body and leave in one write, as web.Response's do: sent
    # apart, they cost a second send(2) and wake the client twice (aiohttp's
    # class-level switch; were it gone, headers would only go out on their own).
    _send_headers_immediately = False


async def send_body(
    request: web.Request, status: int, body: bytes, headers: Mapping[str, str]
) -> web.StreamResponse:
    """Answer with a complete body, keeping no reference to it once sent.

    aiohttp's connection loop holds the last response of every keep-alive
    connection until the next request arrives, and a ``web.Response`` holds its
    body: each idle connection would keep its last answer alive (64 connections
    that each fetched a 128 KiB result pin 8 MB). A ``StreamResponse`` written
    here lets the body go as soon as the transport has sent it.
    """
    resp = _WholeAnswer(status=status, headers=headers)
    resp.content_length = len(body)
    await resp.prepare(request)
    await resp.write(body)
    await resp.write_eof()
    return resp


def error_http(
    status: int,
    doc: dict[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status, body=jsonrpc.dumps(doc), content_type="application/json", headers=headers
    )
