"""What the proxy remembers per MCP session, bounded.

For each ``Mcp-Session-Id`` (or legacy SSE ``session_id``; ``""`` for the
stateless 2026-07-28 transport) the proxy keeps:

- the agent that opened it, so another agent cannot ride on a session id it
  learned (a session is bound to its first principal);
- the tools the *server* listed (annotations and ``inputSchema``), the only
  source of a server-declared risk and of ``Mcp-Param-*`` validation;
- the server's reported version (``serverInfo.version`` from ``initialize``);
- recent request ids and their methods, so a response arriving on another
  stream (a GET stream, a resumed stream, the legacy SSE stream) is still
  recognised as a ``tools/list`` or ``tools/call`` answer and inspected.

Everything is LRU-bounded so a client opening sessions in a loop cannot grow
the proxy's memory without limit.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Pending:
    """A request the proxy forwarded whose answer it must inspect."""

    method: str
    tool: str = ""
    untrusted: bool = False
    agent: str = ""


@dataclass(slots=True)
class Session:
    """State of one MCP session as seen by the proxy."""

    agent: str = ""
    server_version: str = ""
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: OrderedDict[str, Pending] = field(default_factory=OrderedDict)
    #: Legacy SSE only: answers the proxy itself must put on the client's stream.
    inject: asyncio.Queue[bytes | None] | None = None

    def remember(self, request_id: object, item: Pending, limit: int = 1024) -> None:
        key = repr(request_id)
        self.pending[key] = item
        self.pending.move_to_end(key)
        while len(self.pending) > limit:
            self.pending.popitem(last=False)

    def lookup(self, request_id: object) -> Pending | None:
        return self.pending.get(repr(request_id))


class SessionBook:
    """LRU map of session id -> :class:`Session`."""

    def __init__(self, max_sessions: int = 10_000) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._max = max_sessions

    def get(self, session_id: str) -> Session:
        """The session, created on first sight."""
        s = self._sessions.get(session_id)
        if s is None:
            s = Session()
            self._sessions[session_id] = s
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(session_id)
        return s

    def peek(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
