"""Budget state: token buckets, spend windows and per-session mutation counts.

The state is plain data driven by an injected monotonic clock, so tests step
time by hand. It lives apart from a compiled engine so that activating a new
bundle revision does not hand every agent a fresh budget: the guard passes the
same :class:`BudgetState` to each engine it compiles. Buckets are keyed by the
limit's id *and* its numbers, so changing a limit starts it afresh.

Checks and commits are split: the engine first asks every budget that applies
whether the call fits, and only when all agree does it take the tokens, add
the cost and count the mutation. A refused call consumes nothing.

Memory is bounded: each table keeps at most ``max_entries`` keys and forgets
the oldest (insertion order) beyond that.

Every committed change can be observed (``observer``: table name, key, new
value), so an adapter can keep the counters across a restart
(:mod:`sidecar.budget_journal`); :meth:`BudgetState.entries` and
:meth:`BudgetState.restore` read and refill the tables.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")

DEFAULT_MAX_ENTRIES = 100_000

#: The tables, by the name an observer sees. Bucket values are ``[tokens, last
#: refill time]``, spend values ``[window start, spent]``, session values a count.
BUCKETS, SPEND, SESSIONS = "buckets", "spend", "sessions"

Observer = Callable[[str, Hashable, "list[float] | int"], None]


class BudgetState:
    """Mutable budget counters shared across engine revisions."""

    __slots__ = ("_buckets", "_sessions", "_spend", "lock", "max_entries", "observer")

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        #: Told of every committed change, under ``lock`` (see the module docstring).
        self.observer: Observer | None = None
        #: key -> [tokens, last refill time]
        self._buckets: dict[Hashable, list[float]] = {}
        #: key -> [window start, spent]
        self._spend: dict[Hashable, list[float]] = {}
        #: (agent, session) -> mutating calls allowed so far
        self._sessions: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def _bound(self, table: dict[_K, _V]) -> None:
        while len(table) > self.max_entries:
            del table[next(iter(table))]

    # -- token buckets ------------------------------------------------------

    def bucket_wait(self, key: Hashable, rate: float, burst: float, now: float) -> float:
        """Seconds until one token is available (0.0: available now). Refills as a side effect."""
        b = self._buckets.get(key)
        if b is None:
            return 0.0 if burst >= 1.0 else (1.0 - burst) / rate
        tokens = min(burst, b[0] + (now - b[1]) * rate)
        b[0] = tokens
        b[1] = now
        if tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / rate

    def bucket_take(self, key: Hashable, burst: float, now: float) -> None:
        b = self._buckets.get(key)
        if b is None:
            b = self._buckets[key] = [burst - 1.0, now]
            self._bound(self._buckets)
        else:
            b[0] -= 1.0
        if self.observer is not None:
            self.observer(BUCKETS, key, b)

    # -- spend windows ------------------------------------------------------

    def spent(self, key: Hashable, window: float, now: float) -> float:
        """Cost spent in the current window (a fixed window opened by the first spend)."""
        w = self._spend.get(key)
        if w is None or now - w[0] >= window:
            return 0.0
        return w[1]

    def window_left(self, key: Hashable, window: float, now: float) -> float:
        w = self._spend.get(key)
        return 0.0 if w is None else max(0.0, w[0] + window - now)

    def spend(self, key: Hashable, cost: float, window: float, now: float) -> None:
        w = self._spend.get(key)
        if w is None or now - w[0] >= window:
            w = self._spend[key] = [now, cost]
            self._bound(self._spend)
        else:
            w[1] += cost
        if self.observer is not None:
            self.observer(SPEND, key, w)

    # -- mutations per session ---------------------------------------------

    def mutations(self, agent: str, session: str) -> int:
        return self._sessions.get((agent, session), 0)

    def count_mutation(self, agent: str, session: str) -> None:
        key = (agent, session)
        count = self._sessions[key] = self._sessions.get(key, 0) + 1
        self._bound(self._sessions)
        if self.observer is not None:
            self.observer(SESSIONS, key, count)

    # -- keeping the counters ------------------------------------------------

    def entries(self) -> Iterator[tuple[str, Hashable, list[float] | int]]:
        """Every (table, key, value), oldest first within a table (a snapshot's order)."""
        for key, value in list(self._buckets.items()):
            yield BUCKETS, key, list(value)
        for key, value in list(self._spend.items()):
            yield SPEND, key, list(value)
        for skey, count in list(self._sessions.items()):
            yield SESSIONS, skey, count

    def restore(self, table: str, key: Hashable, value: list[float] | int) -> None:
        """Put back one entry as :meth:`entries` gave it (the observer is not told)."""
        if table == SESSIONS and isinstance(value, int) and isinstance(key, tuple):
            self._sessions.pop(key, None)
            self._sessions[key] = value
            self._bound(self._sessions)
        elif table in (BUCKETS, SPEND) and isinstance(value, list) and len(value) == 2:
            target = self._buckets if table == BUCKETS else self._spend
            target.pop(key, None)
            target[key] = [float(value[0]), float(value[1])]
            self._bound(target)
        else:
            raise ValueError(f"not a budget entry: {table!r} {key!r} {value!r}")
