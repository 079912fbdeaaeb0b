"""Forwarding stored audit records to another system, as JSON lines.

The distributor appends every *newly stored* record (duplicates from client
retries are not forwarded twice) to a file or to standard output, one JSON
object per line — the format log shippers (Fluent Bit, Vector, the
OpenTelemetry collector's filelog receiver) pick up without configuration.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from distributor.store import AuditRow


class JsonLinesForwarder:
    def __init__(self, target: str) -> None:
        """``target``: a file path (appended to), or ``-`` for standard output."""
        self.target = target
        self.path = None if target == "-" else Path(target)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _write(self, text: str) -> None:
        if self.path is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(text)

    async def forward(self, rows: Sequence[AuditRow]) -> None:
        if rows:
            await asyncio.to_thread(self._write, "".join(r.json + "\n" for r in rows))
