"""The quarantine store: raw untrusted output kept out of the agent's sight, bounded.

Each quarantined result is kept under an opaque handle (``$VAR1``, ``$VAR2``...)
numbered per *scope* (one MCP session of one agent), for the quarantined side
(a human, the host, the quarantined model) to read later. Bounds, all
configurable: entries expire after ``ttl_s``; one entry holds at most
``max_entry_bytes`` (longer text is cut and marked truncated); all entries
together hold at most ``max_total_bytes`` and each scope at most
``max_entries_per_scope`` (the oldest go first); at most ``max_scopes``
sessions are tracked. A handle is only valid in the
scope that minted it: the same handle from another session is refused. The
clock is injected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field


class HandleRefused(LookupError):
    """A handle that is unknown in this scope, expired, or evicted."""

    def __init__(self, handle: str, reason: str) -> None:
        super().__init__(f"quarantine handle {handle!r} refused: {reason}")
        self.handle = handle
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Entry:
    """One quarantined output."""

    handle: str
    tool: str
    text: str
    created: float
    truncated: bool

    @property
    def size(self) -> int:
        return len(self.text.encode("utf-8"))


@dataclass
class _Scope:
    next_id: int = 1
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)


class QuarantineStore:
    """Bounded, per-scope, TTL'd storage of raw untrusted outputs (not thread-safe; one loop)."""

    def __init__(
        self,
        *,
        ttl_s: float = 900.0,
        max_entry_bytes: int = 1 * 2**20,
        max_total_bytes: int = 32 * 2**20,
        max_entries_per_scope: int = 256,
        max_scopes: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entry_bytes <= 0 or max_total_bytes < max_entry_bytes:
            raise ValueError("quarantine store bounds must be positive, total >= entry")
        if max_entries_per_scope <= 0 or max_scopes <= 0:
            raise ValueError("max_entries_per_scope and max_scopes must be positive")
        self.ttl_s = ttl_s
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self.max_entries_per_scope = max_entries_per_scope
        self.max_scopes = max_scopes
        self._clock = clock
        #: Scopes, least recently written first. A scope keeps its handle counter
        #: while it lives (handles are not reused); the oldest go beyond max_scopes.
        self._scopes: OrderedDict[str, _Scope] = OrderedDict()
        #: (scope, handle) in insertion order, for global oldest-first eviction.
        self._order: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._bytes = 0

    @property
    def total_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._order)

    def put(self, scope: str, tool: str, text: str) -> Entry:
        """Keep ``text`` under a new handle of ``scope``; evicts the oldest to stay in bounds."""
        self.expire()
        raw = text.encode("utf-8")
        truncated = len(raw) > self.max_entry_bytes
        if truncated:
            text = raw[: self.max_entry_bytes].decode("utf-8", errors="ignore")
        s = self._scopes.setdefault(scope, _Scope())
        self._scopes.move_to_end(scope)
        while len(self._scopes) > self.max_scopes:
            self.drop_scope(next(iter(self._scopes)))
        handle = f"$VAR{s.next_id}"
        s.next_id += 1
        entry = Entry(handle, tool, text, self._clock(), truncated)
        while len(s.entries) >= self.max_entries_per_scope:
            self._remove(scope, next(iter(s.entries)))
        while self._order and self._bytes + entry.size > self.max_total_bytes:
            self._remove(*next(iter(self._order)))
        s.entries[handle] = entry
        self._order[(scope, handle)] = entry.size
        self._bytes += entry.size
        return entry

    def get(self, scope: str, handle: str) -> Entry:
        """The entry of ``handle`` in ``scope``; :class:`HandleRefused` otherwise."""
        s = self._scopes.get(scope)
        entry = s.entries.get(handle) if s is not None else None
        if entry is None:
            raise HandleRefused(handle, "no such handle in this session")
        if self._clock() - entry.created >= self.ttl_s:
            self._remove(scope, handle)
            raise HandleRefused(handle, "expired")
        return entry

    def drop_scope(self, scope: str) -> None:
        """Forget everything of one scope (its session ended)."""
        s = self._scopes.get(scope)
        for handle in list(s.entries) if s is not None else []:
            self._remove(scope, handle)
        self._scopes.pop(scope, None)

    def expire(self) -> int:
        """Remove expired entries (oldest first); returns how many."""
        now = self._clock()
        n = 0
        while self._order:
            scope, handle = next(iter(self._order))
            if now - self._scopes[scope].entries[handle].created < self.ttl_s:
                break
            self._remove(scope, handle)
            n += 1
        return n

    def _remove(self, scope: str, handle: str) -> None:
        s = self._scopes[scope]
        entry = s.entries.pop(handle)
        del self._order[(scope, handle)]
        self._bytes -= entry.size
