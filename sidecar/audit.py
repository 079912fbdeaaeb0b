"""Where the proxy's audit records go: the core's signed, chained writer, or the log.

The proxy builds a :class:`palisade.audit.record.Entry` per decision (allowed,
refused, or bad input) and hands it to an :class:`AuditSink` *before* an allowed
call is forwarded: a sink that cannot write raises, and the proxy then refuses
the call (fail closed).

Two ways in. :meth:`AuditSink.commit` (awaited) is the hot path of every decided
``tools/call``: with :class:`WriterSink` it joins the writer's group commit, so
concurrent calls share one ``write(2)`` and one Ed25519 signature per batch (see
docs/check-and-audit.md), and returns only once the record is on disk. The
record's place in the chain is fixed at once; only the wait is shared.
:meth:`AuditSink.write` writes and signs one record at once, for callers that
cannot await (answers to bad input built synchronously).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from palisade.audit.record import Entry

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        """Persist one record now; raise when it cannot be persisted."""
        ...

    async def commit(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        """Persist one record, possibly batched with concurrent ones; raise when it cannot.

        Returns only once the record is persisted: the caller may then act on it.
        """
        ...


class WriterSink:
    """Records through :class:`palisade.audit.writer.AuditWriter` (signed hash chain)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self._writer.append_sync(entry, secret_names)

    async def commit(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        await self._writer.append(entry, secret_names)


class LogSink:
    """Records as structured log lines only (no audit directory configured)."""

    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        log.info(
            "audit",
            extra={
                "agent": entry.agent,
                "tool": entry.tool,
                "decision": entry.decision,
                "rule": entry.rule_id,
                "revision": entry.bundle_revision,
                "kind": entry.kind,
            },
        )

    async def commit(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self.write(entry, secret_names)


class MemorySink:
    """Keeps entries in a list (used by benchmarks and by tests reading back decisions)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self.entries.append(entry)

    async def commit(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self.entries.append(entry)
