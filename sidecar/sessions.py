"""What the proxy remembers per MCP session, bounded, and whose each session is.

A session exists here only once the *upstream* named it: the ``Mcp-Session-Id``
header of its answer to an ``initialize`` (Streamable HTTP) or the
``session_id`` of the ``endpoint`` event (legacy HTTP+SSE). It is then bound to
the principal whose request created it (:class:`Owner`: issuer, subject, agent,
tenant and the human acted for), so

- an id nobody was given by the upstream is unknown (404), never created on first
  use, so it cannot be claimed by whoever guesses or learns it first;
- another principal presenting the id is refused (403), so budgets counted and
  approvals granted for a session never serve someone else;
- the table cannot be flooded: unknown ids make no entry, each owner holds at most
  ``max_per_owner`` sessions (a new one evicts that owner's own oldest), and when
  the whole table is full the owner holding the most sessions loses its oldest.

The stateless record (:attr:`SessionBook.stateless`, the ``""`` session of the
2026-07-28 transport and of servers without sessions) is never evicted.

Per session the proxy keeps the tools the *server* listed (annotations and
``inputSchema``: a server-declared risk, pins and ``Mcp-Param-*`` validation),
the server's version, and the requests it forwarded, so an answer arriving on
another stream (a GET stream, a resumed stream, the legacy SSE stream) is matched
to its request as clients match it (:func:`id_keys`) and inspected, and an
answer that matches no request (or more than one) is withheld.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Who a session belongs to: (issuer, subject, agent, tenant, on_behalf_of).
Owner = tuple[str, str, str, str, str]

IdKey = tuple[str, object]

_JS_SPACE = "\t\n\v\f\r \u00a0\u1680\u2028\u2029\u202f\u205f\u3000\ufeff" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
)
_JS_DECIMAL = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Infinity)\Z")
_JS_PREFIXED = re.compile(r"0(?:[xX][0-9a-fA-F]+|[oO][0-7]+|[bB][01]+)\Z")


def _number_key(value: float) -> IdKey | None:
    if math.isnan(value):
        return None
    if math.isfinite(value) and value == int(value):
        return ("n", int(value))
    return ("n", value)


def _string_numbers(text: str) -> set[IdKey]:
    """What a string id becomes in clients that turn ids into numbers.

    JavaScript's ``Number()`` (the TypeScript SDK looks answers up by
    ``Number(id)``) and Python's ``int()`` (the Python SDK normalises numeric string
    ids) are both tried; whatever either makes of the string is a key.
    """
    keys: set[IdKey] = set()
    trimmed = text.strip(_JS_SPACE)
    js: float | None = None
    if trimmed == "":
        js = 0.0
    elif _JS_DECIMAL.match(trimmed):
        js = float(trimmed.replace("Infinity", "inf"))
    elif _JS_PREFIXED.match(trimmed):
        js = float(int(trimmed, 0))
    if js is not None and (k := _number_key(js)) is not None:
        keys.add(k)
    for parse in (int, float):
        try:
            num = parse(text)
        except (ValueError, OverflowError):
            continue
        if (k := _number_key(float(num)) if isinstance(num, float) else ("n", num)) is not None:
            keys.add(k)
    return keys


def id_keys(value: object) -> frozenset[IdKey]:
    """The keys under which some client would match a JSON-RPC id; empty: matches nothing.

    Two ids match when their keys meet: ``1``, ``1.0``, ``"1"``, ``" 1"``, ``"0x1"``,
    ``"1e0"`` and ``true`` all answer request ``1``, as one client or another reads
    them. Null, arrays and objects match no request.
    """
    if isinstance(value, bool):
        return frozenset({("n", int(value)), ("s", "true" if value else "false")})
    if isinstance(value, int):
        keys: set[IdKey] = {("n", value)}
        if abs(value) > 2**53:  # JavaScript reads it as the nearest double
            keys.add(("n", int(float(value))))
        return frozenset(keys)
    if isinstance(value, float):
        k = _number_key(value)
        return frozenset({k} if k is not None else ())
    if isinstance(value, str):
        return frozenset({("s", value), *_string_numbers(value)})
    return frozenset()


def owner_of(principal: Any) -> Owner:
    """The :data:`Owner` of a :class:`~sidecar.identity.Principal`."""
    return (
        str(principal.issuer),
        str(principal.subject),
        str(principal.agent),
        str(principal.tenant),
        str(principal.on_behalf_of),
    )


@dataclass(slots=True)
class Pending:
    """A request the proxy forwarded, whose answer it matches (and maybe rewrites)."""

    method: str
    tool: str = ""
    untrusted: bool = False
    agent: str = ""
    #: The id exactly as the client sent it; forwarded answers carry this id.
    request_id: object = None
    #: Whether the answer is rewritten (``tools/list`` filtered, output guarded).
    inspect: bool = True
    #: Links the decision record to the outcome record (decided calls only).
    call_id: str = ""
    #: The principal that sent it.
    owner: Owner | None = None
    #: An answer was relayed (a repeated one, on a resumed stream, still matches).
    answered: bool = False
    #: The outcome record was written (once per call).
    outcome_done: bool = False
    #: Monotonic time it was forwarded (legacy transport: the answer's deadline).
    started: float = 0.0
    #: The proxy already answered it with an error (timed out): a late answer is withheld.
    expired: bool = False
    #: The call's ``params._meta.progressToken``: progress sent on another stream that
    #: names it belongs to this call (an untrusted call's is quarantined).
    progress_token: object = None


@dataclass(slots=True)
class Session:
    """State of one MCP session as seen by the proxy."""

    owner: Owner | None = None
    server_version: str = ""
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Requests by arrival number, oldest first; ``_index`` maps id keys to numbers.
    pending: OrderedDict[int, Pending] = field(default_factory=OrderedDict)
    _index: dict[IdKey, set[int]] = field(default_factory=dict)
    #: Legacy SSE only: answers the proxy itself must put on the client's stream.
    inject: asyncio.Queue[bytes | None] | None = None
    #: SSE event ids seen on a request's POST stream -> that request: a stream resumed
    #: with ``Last-Event-ID`` continues that request's stream (bounded, oldest go).
    events: OrderedDict[str, Pending] = field(default_factory=OrderedDict)
    #: Requests the server sent the client and the sidecar passed, by their id's keys,
    #: with their method: the client may answer only these, once (bounded, oldest go).
    asked: OrderedDict[frozenset[IdKey], str] = field(default_factory=OrderedDict)

    def ask(self, request_id: object, method: str, limit: int = 256) -> None:
        """The server's request ``request_id`` went to the client: an answer may come."""
        keys = id_keys(request_id)
        if keys:
            self.asked[keys] = method
            while len(self.asked) > limit:
                self.asked.popitem(last=False)

    def answered(self, answer_id: object) -> str | None:
        """The method of the passed server request this answers (forgotten now), or None."""
        keys = id_keys(answer_id)
        for asked, method in self.asked.items():
            if asked & keys:
                del self.asked[asked]
                return method
        return None

    @property
    def agent(self) -> str:
        return self.owner[2] if self.owner is not None else ""

    def remember(self, request_id: object, item: Pending, limit: int = 1024) -> None:
        """Remember a forwarded request; an answered one with a matching id is forgotten."""
        item.request_id = request_id
        keys = id_keys(request_id)
        for k in keys:
            for n in list(self._index.get(k, ())):
                old = self.pending.get(n)
                if old is not None and old.answered:
                    self._forget(n)
        n = next(_numbers)
        self.pending[n] = item
        for k in keys:
            self._index.setdefault(k, set()).add(n)
        while len(self.pending) > limit:
            self._forget(next(iter(self.pending)))

    def _forget(self, n: int) -> None:
        item = self.pending.pop(n, None)
        if item is None:
            return
        for k in id_keys(item.request_id):
            nums = self._index.get(k)
            if nums is not None:
                nums.discard(n)
                if not nums:
                    del self._index[k]

    def match(self, answer_id: object) -> Pending | None:
        """The one request an answer with ``answer_id`` answers; None when none or several."""
        found: set[int] = set()
        for k in id_keys(answer_id):
            found |= self._index.get(k, set())
        if len(found) != 1:
            return None
        return self.pending.get(found.pop())

    def lookup(self, request_id: object) -> Pending | None:
        return self.match(request_id)

    def unanswered(self) -> list[Pending]:
        return [p for p in self.pending.values() if not p.answered]

    def note_event(self, event_id: str, item: Pending, limit: int = 1024) -> None:
        """An event with this id went out on ``item``'s POST stream."""
        self.events[event_id] = item
        self.events.move_to_end(event_id)
        while len(self.events) > limit:
            self.events.popitem(last=False)

    def untrusted_calls(self) -> list[Pending]:
        """The calls of untrusted tools remembered here, oldest first."""
        return [p for p in self.pending.values() if p.untrusted]


def tied_to(calls: list[Pending], progress_token: object, request_id: object) -> Pending | None:
    """The last of ``calls`` a server message names by progress token or request id
    (compared as clients compare ids, :func:`id_keys`)."""
    tokens = id_keys(progress_token)
    ids = id_keys(request_id)
    if not tokens and not ids:
        return None
    for p in reversed(calls):
        if (tokens & id_keys(p.progress_token)) or (ids & id_keys(p.request_id)):
            return p
    return None


_numbers = count(1)


class SessionTaken(Exception):
    """The upstream named a session that is already bound to another principal."""


class SessionBook:
    """Sessions by id, each bound to its owner; bounded overall and per owner."""

    def __init__(
        self, max_sessions: int = 10_000, max_per_owner: int = 256, store: Path | None = None
    ) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._by_owner: dict[Owner, OrderedDict[str, None]] = {}
        self._max = max_sessions
        self._per_owner = max(1, min(max_per_owner, max_sessions))
        #: The stateless record (no session id): server version and tools, never evicted.
        self.stateless = Session()
        #: Where bindings (id -> owner) outlive a restart: sessions live on in the
        #: upstream, and must stay their owners' (None: in memory only).
        self._store = store
        self._loading = False
        if store is not None:
            self._load(store)

    def _load(self, store: Path) -> None:
        try:
            saved = json.loads(store.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("session bindings unreadable (%s); starting without them", exc)
            return
        self._loading = True
        try:
            for sid, owner in saved if isinstance(saved, list) else ():
                if isinstance(sid, str) and isinstance(owner, list) and len(owner) == 5:
                    self.bind(sid, (*map(str, owner),))  # type: ignore[arg-type]
        finally:
            self._loading = False

    def _save(self) -> None:
        if self._store is None or self._loading:
            return
        # legacy SSE sessions end with their stream, so with the process
        doc = [
            [sid, list(s.owner)]
            for sid, s in self._sessions.items()
            if s.owner is not None and not sid.startswith("sse:")
        ]
        tmp = self._store.with_name(self._store.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self._store)
        except OSError as exc:
            log.warning("cannot save session bindings: %s", exc)

    def bind(self, session_id: str, owner: Owner) -> Session:
        """Record a session the upstream created for ``owner`` (idempotent for that owner).

        Raises :class:`SessionTaken` when the id is bound to someone else.
        """
        if not session_id:
            return self.stateless
        s = self._sessions.get(session_id)
        if s is not None:
            if s.owner != owner:
                raise SessionTaken(session_id)
            self._sessions.move_to_end(session_id)
            self._by_owner[owner].move_to_end(session_id)
            return s
        s = Session(owner=owner)
        self._sessions[session_id] = s
        mine = self._by_owner.setdefault(owner, OrderedDict())
        mine[session_id] = None
        while len(mine) > self._per_owner:
            self.drop(next(iter(mine)))
        while len(self._sessions) > self._max:
            heaviest = max(self._by_owner.values(), key=len)
            self.drop(next(iter(heaviest)))
        self._save()
        return s

    def get(self, session_id: str) -> Session:
        """The record of a known session (or the stateless one for ``""``).

        For tests and for callers that already checked the id: an unknown id gets a
        fresh record owned by nobody, which :meth:`owned` never hands out.
        """
        if not session_id:
            return self.stateless
        s = self._sessions.get(session_id)
        return s if s is not None else Session()

    def peek(self, session_id: str) -> Session | None:
        if not session_id:
            return self.stateless
        return self._sessions.get(session_id)

    def owned(self, session_id: str, owner: Owner) -> Session | None:
        """The session if it exists and belongs to ``owner`` (refreshing its LRU place)."""
        s = self._sessions.get(session_id)
        if s is None or s.owner != owner:
            return None
        self._sessions.move_to_end(session_id)
        self._by_owner[owner].move_to_end(session_id)
        return s

    def drop(self, session_id: str) -> None:
        s = self._sessions.pop(session_id, None)
        if s is None or s.owner is None:
            return
        mine = self._by_owner.get(s.owner)
        if mine is not None:
            mine.pop(session_id, None)
            if not mine:
                del self._by_owner[s.owner]
        self._save()

    def count_of(self, owner: Owner) -> int:
        return len(self._by_owner.get(owner, ()))

    def __len__(self) -> int:
        return len(self._sessions)
