"""What every request passes before a transport sees it, and the parser's own refusals.

Two ways a request is refused before :mod:`sidecar.streamable` or
:mod:`sidecar.legacy` run, both answered and audited (one record each):

- :func:`edge_middleware`: HTTP-level bounds (a header line over
  ``Limits.max_header_bytes``: 431; more than :data:`MAX_HEADER_LINES` header
  lines: 431; a request target over the same limit: 414) and one value per field
  (a repeated identity, session or routing header, or session query parameter:
  400, see :mod:`sidecar.http`). Reading the last copy where the proxy read the
  first is how an upstream would act on a value the proxy never checked.
  Exceptions a handler lets escape are recorded too (kind ``error``) before
  aiohttp answers 500.
- :class:`ParserErrorAudit`: what aiohttp's HTTP parser refuses (``Content-Length``
  with ``Transfer-Encoding``, a repeated ``Content-Length``, a malformed line, a
  header beyond the parser's own limits) never reaches a middleware; aiohttp
  answers 400 itself and logs the error through the request handler's logger.
  That logger is this adapter (``handler_args``, see :func:`handler_args`), which
  records the refusal.

:func:`handler_args` also sets the parser's limits to twice Palisade's, so a
request just over a Palisade limit is refused by the middleware (with the path and
the header's name in the record) and only grossly oversized ones by the parser.
An :class:`aiohttp.web.Application`'s ``handler_args`` override what the runner is
given, so these hold however the app is served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from palisade.audit.record import Entry
from sidecar import jsonrpc
from sidecar.http import (
    SESSION_QUERY_PARAMS,
    duplicated_header,
    error_http,
    session_query_values,
)
from sidecar.identity import AuthError, Principal
from sidecar.settings import Limits

if TYPE_CHECKING:
    from sidecar.core import ProxyCore

log = logging.getLogger(__name__)

#: Most header lines a request may carry (aiohttp's own default).
MAX_HEADER_LINES = 128
#: The parser's limits are this many times Palisade's (see the module docstring).
PARSER_HEADROOM = 2
#: Attribute set on an exception once its refusal is recorded (never twice).
_RECORDED = "_palisade_recorded"
#: Values of a repeated field kept in its record (never for Authorization).
_SHOWN_VALUES = 4
_SHOWN_CHARS = 200

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused at the edge: the answer, and what its record says."""

    status: int
    code: int
    message: str
    rule_id: str
    details: Mapping[str, Any]


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def bounds_refusal(request: web.BaseRequest, limits: Limits) -> Refusal | None:
    """Palisade's limits on the request line and headers (pure over the parsed request)."""
    limit = limits.max_header_bytes
    target = request.raw_path
    if len(target) > limit:
        return Refusal(
            414,
            jsonrpc.LIMIT_EXCEEDED,
            f"the request target exceeds the limit of {limit} bytes",
            "limit",
            {"limit": "max_header_bytes", "bytes": len(target)},
        )
    lines = request.raw_headers
    if len(lines) > MAX_HEADER_LINES:
        return Refusal(
            431,
            jsonrpc.LIMIT_EXCEEDED,
            f"the request has more than {MAX_HEADER_LINES} header lines",
            "limit",
            {"limit": "header_lines", "lines": len(lines)},
        )
    for name, value in lines:
        size = len(name) + 2 + len(value)
        if size > limit:
            shown = _shown(name.decode("latin-1"))
            return Refusal(
                431,
                jsonrpc.LIMIT_EXCEEDED,
                f"the {shown} header exceeds the limit of {limit} bytes",
                "limit",
                {"limit": "max_header_bytes", "header": shown, "bytes": size},
            )
    return None


def field_refusal(request: web.BaseRequest) -> Refusal | None:
    """One value per identity, session and routing field (see :mod:`sidecar.http`)."""
    dup = duplicated_header(request.headers.items())
    if dup is not None:
        values = [] if dup == "authorization" else _values_of(request, dup)
        return Refusal(
            400,
            jsonrpc.HEADER_MISMATCH,
            f"Header mismatch: {dup} appears more than once",
            "duplicate-field",
            {"field": dup, "values": values},
        )
    seen = session_query_values(request.rel_url.raw_query_string)
    try:
        # what the upstream is sent: the proxy forwards path_qs, re-encoded by the client
        forwarded = URL("http://upstream" + request.rel_url.path_qs).raw_query_string
    except ValueError:
        forwarded = None
    sent = session_query_values(forwarded) if forwarded is not None else None
    # what the legacy transport reads (sidecar/legacy.py)
    read = [v for p in SESSION_QUERY_PARAMS for v in request.query.getall(p, [])]
    if len(seen) > 1 or sent != seen or read[:1] != seen[:1]:
        return Refusal(
            400,
            jsonrpc.INVALID_REQUEST,
            "Invalid Request: the session query parameter must be given once",
            "duplicate-field",
            {"field": "session_id", "values": [_shown(v) for v in seen[:_SHOWN_VALUES]]},
        )
    return None


def _values_of(request: web.BaseRequest, key: str) -> list[str]:
    return [
        _shown(v) for k, v in request.headers.items() if k.strip().lower().replace("_", "-") == key
    ][:_SHOWN_VALUES]


def edge_middleware(core: ProxyCore) -> Any:
    """The middleware described in the module docstring."""
    limits = core.settings.limits

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = bounds_refusal(request, limits)
        principal: Principal | None = None
        if refusal is None:
            refusal = field_refusal(request)
            if refusal is not None and refusal.details.get("field") != "authorization":
                principal = await _caller(core, request)
        if refusal is not None:
            return await _refuse(core, request, refusal, principal)
        try:
            return await handler(request)
        except HttpProcessingError as exc:
            # the body broke the framing (chunked encoding, a short body): bad input
            if getattr(exc, _RECORDED, False):
                raise
            _mark(exc)
            return await _refuse(core, request, _malformed(exc), None)
        except (web.HTTPException, ConnectionError):
            raise  # an answer of its own, or a client that went away: no refusal
        except Exception as exc:
            if not getattr(exc, _RECORDED, False):
                _mark(exc)
                await core.commit_record(
                    Entry(
                        server=core.settings.server_name,
                        decision="deny",
                        rule_id="internal-error",
                        reason=f"the proxy failed on this request ({type(exc).__name__})",
                        kind="error",
                        details={"http_status": 500, "path": request.path},
                    )
                )
            raise

    return edge


async def _caller(core: ProxyCore, request: web.Request) -> Principal | None:
    """Who sent a refused request, when its (single) token says so; else None."""
    try:
        return await core.authenticator.authenticate(request.headers)
    except AuthError:
        return None


async def _refuse(
    core: ProxyCore, request: web.Request, refusal: Refusal, principal: Principal | None
) -> web.StreamResponse:
    core.metrics.rejected.labels("bad_input").inc()
    session = request.headers.getall("Mcp-Session-Id", [])
    await core.commit_record(
        Entry(
            agent=principal.agent if principal else "",
            tenant=principal.tenant if principal else "",
            on_behalf_of=principal.on_behalf_of if principal else "",
            server=core.settings.server_name,
            session=session[0] if len(session) == 1 else "",
            decision="deny",
            rule_id=refusal.rule_id,
            reason=refusal.message,
            dev_identity=bool(principal and principal.dev_mode),
            kind="bad_input",
            details={
                **(principal.audit_details() if principal else {}),
                **refusal.details,
                "code": refusal.code,
                "http_status": refusal.status,
                "method": _shown(request.method),
                "path": _shown(request.path),
            },
        )
    )
    doc = jsonrpc.error_response(None, refusal.code, refusal.message)
    return error_http(refusal.status, doc)


def _malformed(exc: HttpProcessingError) -> Refusal:
    return Refusal(
        400,
        jsonrpc.PARSE_ERROR,
        f"Parse error: the HTTP request is malformed ({_shown(str(exc.message))})",
        "bad-input",
        {"error": type(exc).__name__},
    )


def _mark(exc: BaseException) -> None:
    # an exception type with __slots__ cannot be marked: it may be recorded twice
    with contextlib.suppress(AttributeError):
        setattr(exc, _RECORDED, True)


class ParserErrorAudit(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's request-handler logger, recording every request its parser refused.

    aiohttp answers a request it cannot parse with 400 from inside the protocol,
    without routing, middleware or handler; the one thing it does with the error
    is log it, with the exception as ``exc_info``. This adapter passes every line
    on to aiohttp's own logger and writes one audit record per such refusal.
    """

    def __init__(self, core: ProxyCore, logger: logging.Logger | None = None) -> None:
        super().__init__(logger or logging.getLogger("aiohttp.server"), {})
        self._core = core

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError) and not getattr(exc, _RECORDED, False):
            _mark(exc)
            remote = args[0] if args else ""
            refusal = _malformed(exc)
            self._core.metrics.rejected.labels("bad_input").inc()
            self._core.record(
                Entry(
                    server=self._core.settings.server_name,
                    decision="deny",
                    rule_id=refusal.rule_id,
                    reason=refusal.message,
                    kind="bad_input",
                    details={
                        **refusal.details,
                        "code": refusal.code,
                        "http_status": 400,
                        "stage": "http-parser",
                        "remote": _shown(str(remote)),
                    },
                )
            )
        super().log(level, msg, *args, **kwargs)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


def handler_args(core: ProxyCore) -> dict[str, Any]:
    """The request handler's settings every sidecar app is served with (module docstring)."""
    limit = core.settings.limits.max_header_bytes * PARSER_HEADROOM
    return {
        "max_line_size": limit,
        "max_field_size": limit,
        "max_headers": MAX_HEADER_LINES * PARSER_HEADROOM,
        "logger": ParserErrorAudit(core),
    }
