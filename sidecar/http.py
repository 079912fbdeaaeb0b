"""HTTP plumbing shared by the transports: which headers cross, and how answers are sent.

Pure helpers over aiohttp objects; the transports (:mod:`sidecar.streamable`,
:mod:`sidecar.legacy`) and :class:`~sidecar.core.ProxyCore` use them at their edges.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers the upstream may see: never ``Authorization`` or cookies."""
    return {
        k: v
        for k, v in headers.items()
        if (lk := k.lower()) in FORWARD_REQUEST_HEADERS or lk.startswith("mcp-param-")
    }


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in FORWARD_RESPONSE_HEADERS}


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
