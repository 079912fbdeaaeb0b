"""Audit records waiting on local disk until the distributor has stored them.

Layout in the spool directory:

- ``records``: append-only, each record as a 4-byte big-endian length then the
  serialized ``AuditRecord``;
- ``cursor``: the byte offset up to which the distributor acknowledged storage,
  replaced atomically after each acknowledged batch.

A crash between sending a batch and writing the cursor resends that batch; the
distributor stores records idempotently (by source, sequence and hash), so the
worst case is a duplicate send, never a lost or duplicated stored record. When
every record is acknowledged the files are reset, so the spool does not grow
while the distributor is reachable.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from palisade.distribution.lkg import atomic_write
from palisade.v1 import audit_pb2

_LEN = struct.Struct(">I")
MAX_RECORD_BYTES = 4 * 2**20


class SpoolError(Exception):
    """The spool on disk is unreadable (truncated or corrupt beyond the cursor)."""


class AuditSpool:
    def __init__(self, directory: str | Path, *, fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records_path = self.dir / "records"
        self.cursor_path = self.dir / "cursor"
        self.fsync = fsync

    # -- writer side -------------------------------------------------------
    def append(self, records: list[audit_pb2.AuditRecord]) -> None:
        buf = bytearray()
        for record in records:
            data = record.SerializeToString()
            if len(data) > MAX_RECORD_BYTES:
                raise ValueError(f"audit record {record.seq} is larger than {MAX_RECORD_BYTES}")
            buf += _LEN.pack(len(data)) + data
        with open(self.records_path, "ab") as fh:
            fh.write(buf)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())

    # -- shipper side ------------------------------------------------------
    def cursor(self) -> int:
        try:
            return int(self.cursor_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def size(self) -> int:
        try:
            return self.records_path.stat().st_size
        except FileNotFoundError:
            return 0

    def pending_bytes(self) -> int:
        return max(0, self.size() - self.cursor())

    def read_batch(self, max_records: int) -> tuple[list[audit_pb2.AuditRecord], int]:
        """Up to ``max_records`` unacknowledged records and the offset just past them."""
        records, ends = self.read_entries(max_records)
        return records, ends[-1] if ends else self.cursor()

    def read_entries(self, max_records: int) -> tuple[list[audit_pb2.AuditRecord], list[int]]:
        """Up to ``max_records`` unacknowledged records and, for each, the offset just past
        it (so the receiver may acknowledge a part of a batch)."""
        offset = self.cursor()
        out: list[audit_pb2.AuditRecord] = []
        ends: list[int] = []
        try:
            fh = open(self.records_path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return out, ends
        with fh:
            fh.seek(offset)
            while len(out) < max_records:
                head = fh.read(_LEN.size)
                if len(head) < _LEN.size:
                    break  # nothing more, or a write in progress
                (length,) = _LEN.unpack(head)
                if length > MAX_RECORD_BYTES:
                    raise SpoolError(f"{self.records_path}: corrupt length {length} at {offset}")
                data = fh.read(length)
                if len(data) < length:
                    break
                record = audit_pb2.AuditRecord()
                record.ParseFromString(data)
                out.append(record)
                offset += _LEN.size + length
                ends.append(offset)
        return out, ends

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is stored upstream; reset when nothing is left."""
        if offset >= self.size():
            # Reset both files, cursor first: a crash in between leaves acknowledged
            # records behind a zero cursor, which are resent and deduplicated
            # upstream; the other order could leave a cursor past new records.
            self.cursor_path.unlink(missing_ok=True)
            self.records_path.unlink(missing_ok=True)
            return
        atomic_write(self.cursor_path, str(offset).encode())
