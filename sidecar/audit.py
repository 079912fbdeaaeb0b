"""Where the proxy's audit records go: the core's signed, chained writer, or the log.

The proxy builds a :class:`palisade.audit.record.Entry` per decision (allowed,
refused, or bad input) and hands it to an :class:`AuditSink` *before* an allowed
call is forwarded: a sink that cannot write raises, and the proxy then refuses
the call (fail closed).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from palisade.audit.record import Entry

log = logging.getLogger(__name__)


class AuditSink(Protocol):
    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        """Persist one record; raise when it cannot be persisted."""
        ...


class WriterSink:
    """Records through :class:`palisade.audit.writer.AuditWriter` (signed hash chain)."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self._writer.append_sync(entry, secret_names)


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


class MemorySink:
    """Keeps entries in a list (used by benchmarks and by tests reading back decisions)."""

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def write(self, entry: Entry, secret_names: Iterable[str] = ()) -> None:
        self.entries.append(entry)
