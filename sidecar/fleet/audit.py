"""Audit shipping: the audit log first, then the client's on-disk spool, in chain order.

:class:`ShippingWriter` is the core's :class:`~palisade.audit.AuditWriter` that also
hands every record it wrote to an in-memory tap (a ``deque.append`` on the request
path, nothing more). :class:`AuditShipper` moves tapped records, contiguous by
``seq``, into the spool of :class:`palisade.distribution.DistributionClient` and
advances the writer's shipping cursor; the client sends the spool and drops it
only once the distributor stored it. What the tap missed is read back from the
audit log, so the cursor never skips a record; a full spool leaves records in the
log until it drains.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from palisade.audit import AuditWriter, Entry, to_proto
from palisade.distribution import AuditSpool
from palisade.v1 import audit_pb2, distribution_pb2

log = logging.getLogger(__name__)

#: Records waiting in memory for the shipper; beyond this the audit log on disk is read instead.
TAP_LIMIT = 100_000
#: How many records one read of the audit log moves into the spool.
DISK_BATCH = 1000


class ShippingWriter(AuditWriter):
    """The core's audit writer; every record it wrote is also handed to the shipper.

    Only a record that was written (the call returned) is tapped, so the tap never
    holds a record that is not on disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tap: collections.deque[dict[str, Any]] = collections.deque(maxlen=TAP_LIMIT)

    def append_sync(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        record = super().append_sync(entry, secret_names)
        self._tap.append(record)
        return record

    async def append(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        record = await super().append(entry, secret_names)
        self._tap.append(record)
        return record

    def drain(self) -> list[dict[str, Any]]:
        """The records tapped since the last call (any order)."""
        out = list(self._tap)
        self._tap.clear()
        return out


def audit_keys(writer: AuditWriter | None) -> tuple[distribution_pb2.AuditKey, ...]:
    """The writer's signing key as the client registers it with the distributor (the
    distributor accepts only records signed by a key registered for the sender)."""
    if writer is None:
        return ()
    kid, source, proof = writer.key_proof()
    return (distribution_pb2.AuditKey(key_id=kid, source=source, proof=proof),)


class AuditShipper:
    """Moves audit records, in chain order and without gaps, into the client's spool.

    ``cursor`` is the highest seq handed to the spool, persisted as the writer's
    shipping cursor; it only moves over a contiguous run of records. A gap (a
    record the tap did not see) is filled from the audit log after ``gap_grace_s``.
    While the spool holds ``max_spool_bytes`` or more, nothing new enters it: the
    records wait in the audit log and are read from there once it drains.
    """

    def __init__(
        self,
        writer: ShippingWriter,
        spool: AuditSpool,
        *,
        max_spool_bytes: int = 8 * 2**20,
        gap_grace_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.max_spool_bytes = max_spool_bytes
        self.gap_grace_s = gap_grace_s
        self._clock = clock
        self.cursor = writer.shipped_through
        self._held: dict[int, dict[str, Any]] = {}
        self._gap_since: float | None = None
        self.spooled = 0
        self.skipped = 0

    @property
    def behind(self) -> int:
        """Records written but not yet in the spool."""
        return max(0, self.writer.head[0] - self.cursor)

    async def pump(self, *, from_disk: bool = False) -> int:
        """One step: spool what can go now; returns how many records went."""
        tapped = self.writer.drain()
        if self.spool.pending_bytes() >= self.max_spool_bytes:
            self._held.clear()  # they stay in the audit log; read back from there later
            return 0
        for record in tapped:
            seq = int(record["seq"])
            if seq > self.cursor:
                self._held[seq] = record
        batch: list[dict[str, Any]] = []
        nxt = self.cursor + 1
        while nxt in self._held:
            batch.append(self._held.pop(nxt))
            nxt += 1
        if batch or self.writer.head[0] <= self.cursor:
            self._gap_since = None
        else:
            now = self._clock()
            if self._gap_since is None:
                self._gap_since = now
            if from_disk or now - self._gap_since >= self.gap_grace_s:
                self._gap_since = None
                batch = await asyncio.to_thread(self._read_disk, self.cursor)
                for record in batch:
                    self._held.pop(int(record["seq"]), None)
        if not batch:
            return 0
        self._spool(batch)
        self.cursor = int(batch[-1]["seq"])
        await asyncio.to_thread(self.writer.mark_shipped, self.cursor)
        return len(batch)

    def _read_disk(self, after: int) -> list[dict[str, Any]]:
        """The next contiguous records after ``after`` in the audit log."""
        out: list[dict[str, Any]] = []
        expect = after + 1
        for record in self.writer.read_after(after, DISK_BATCH):
            seq = int(record["seq"])
            if not out and seq > expect:
                # The log itself lacks them (deleted by hand?): say so rather than stall.
                log.error(
                    "audit records missing from the log", extra={"from": expect, "to": seq - 1}
                )
                expect = seq
            if seq != expect:
                break  # the rest comes with the next read
            out.append(record)
            expect += 1
        return out

    def _spool(self, records: Sequence[Mapping[str, Any]]) -> None:
        protos: list[audit_pb2.AuditRecord] = []
        for record in records:
            try:
                protos.append(to_proto(record))
            except Exception as exc:  # a record the proto cannot carry: say so, go on
                self.skipped += 1
                log.error(
                    "audit record cannot be shipped",
                    extra={"seq": record.get("seq"), "error": type(exc).__name__},
                )
        try:
            self.spool.append(protos)
        except ValueError:  # one record over the spool's size limit
            for proto in protos:
                try:
                    self.spool.append([proto])
                except ValueError:
                    self.skipped += 1
                    log.error("audit record too large to ship", extra={"seq": proto.seq})
        self.spooled += len(protos)
