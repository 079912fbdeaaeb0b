"""Budget counters kept across a sidecar restart: an append-only journal in the state dir.

What a restart must not forget: how many mutating calls each session and each
agent made, how much of each spend cap is used, how full each rate-limit bucket
is. :class:`BudgetJournal` observes a :class:`~palisade.policy.budgets.BudgetState`
and appends one JSON line per committed change, with ``os.write`` on an
``O_APPEND`` descriptor: the line is in the kernel before the call is forwarded,
so a killed process (SIGKILL, OOM, a crash) loses nothing. A node that loses
power may lose the page cache's last lines; the state dir is the pod's, so a
deleted pod starts afresh (sharing budgets across replicas and pods is the
distributor's job).

File format (``budgets.jsonl``): a header line ``{"palisade-budgets": 1}``, then
``[table, key, value]`` lines, the last line for a key winning. Times are wall
clock seconds in the file and the engine's monotonic clock in memory. On open
the journal is replayed, then rewritten as a snapshot (one line per key) beside
the file and renamed over it; it is rewritten again whenever it grows past
``compact_after`` lines. A torn or foreign line is skipped and counted, never
fatal; a journal that cannot be read or written at start stops the sidecar
(budgets that silently restart at zero would fail open).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from palisade.policy.budgets import BUCKETS, SESSIONS, SPEND, BudgetState

log = logging.getLogger(__name__)

FILE_NAME = "budgets.jsonl"
HEADER = b'{"palisade-budgets": 1}\n'
#: Which element of a value is a time (converted between clocks), per table.
_TIME_AT = {BUCKETS: 1, SPEND: 0}


class BudgetJournal:
    """Keeps one :class:`BudgetState` in ``path``; attach with :meth:`open`."""

    def __init__(
        self,
        state: BudgetState,
        path: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        compact_after: int = 50_000,
    ) -> None:
        self.state = state
        self.path = path
        self.compact_after = compact_after
        #: wall time = monotonic time + offset (fixed for this process)
        self._offset = wall() - clock()
        self._fd = -1
        self._lines = 0
        self.skipped = 0

    @classmethod
    def open(cls, state: BudgetState, path: Path, **kwargs: Any) -> BudgetJournal:
        """Replay ``path`` into ``state``, compact it, and record every change from now on."""
        journal = cls(state, path, **kwargs)
        with state.lock:
            journal._replay()
            journal._compact()
            state.observer = journal._record
        return journal

    def close(self) -> None:
        self.state.observer = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing ------------------------------------------------------------------

    def _line(self, table: str, key: Hashable, value: list[float] | int) -> bytes:
        at = _TIME_AT.get(table)
        if at is not None and isinstance(value, list):
            value = list(value)
            value[at] += self._offset
        keys = list(key) if isinstance(key, tuple) else [key]
        return json.dumps([table, keys, value], separators=(",", ":")).encode() + b"\n"

    def _record(self, table: str, key: Hashable, value: list[float] | int) -> None:
        os.write(self._fd, self._line(table, key, value))
        self._lines += 1
        if self._lines > self.compact_after:
            self._compact()

    def _compact(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        lines = [self._line(t, k, v) for t, k, v in self.state.entries()]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, HEADER + b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._lines = len(lines)
        # Grow the threshold with the state, so a large table is not rewritten per call.
        self.compact_after = max(self.compact_after, 4 * len(lines))

    # -- reading ------------------------------------------------------------------

    def _replay(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        restored = 0
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip() or (number == 1 and line + b"\n" == HEADER):
                continue
            try:
                table, key, value = self._parse(line)
                self.state.restore(table, key, value)
                restored += 1
            except (ValueError, TypeError):
                self.skipped += 1
                log.warning("budget journal %s: line %d is no entry, skipped", self.path, number)
        log.info("budget journal %s: %d entries restored", self.path, restored)

    def _parse(self, line: bytes) -> tuple[str, Hashable, list[float] | int]:
        item = json.loads(line)
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], list)):
            raise ValueError("not [table, key, value]")
        table, key, value = item
        if any(isinstance(k, list | dict) for k in key):
            raise ValueError("a key holds only strings and numbers")
        if table in _TIME_AT:
            if not (isinstance(value, list) and all(_number(v) for v in value)):
                raise ValueError("a bucket or spend value is two numbers")
            value = [float(v) for v in value]
            if len(value) == 2:
                value[_TIME_AT[table]] -= self._offset
        elif table == SESSIONS:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("a session count is a whole number")
        else:
            raise ValueError(f"unknown table {table!r}")
        return str(table), tuple(key), value


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def open_journal(state: BudgetState, state_dir: Path) -> BudgetJournal:
    """The journal of ``state`` in ``state_dir`` (created if missing)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    return BudgetJournal.open(state, state_dir / FILE_NAME)
