"""Verification of audit logs: every way a record can be edited, lost or moved, located.

Checks, record by record, in chain order:
  * the line is a JSON object with the chain fields (else: truncated or garbled);
  * ``hash`` equals the hash recomputed over the content (else: edited);
  * ``signature`` verifies under the key named by ``key_id`` (else: forged), and
    that key is one of the trusted keys when any are given (else: untrusted).
    A record written inside a group commit has an empty signature: the next
    signed record covers it through the chain, and a log that ends with
    unsigned records is reported (unsigned tail);
  * ``seq`` follows the previous record's (a gap: removed records; going back:
    reordered, inserted or duplicated records);
  * ``prev_hash`` equals the previous record's ``hash`` (else: the chain is
    broken here: a record was replaced, inserted or removed before it).
After a problem the check re-anchors on the record it just read, so one
tampered record yields one or two findings, not a cascade.

Files are taken in chain order: sorted by the seq of their first record, so a
shell glob in any order works. The chain must start at seq 1 unless
``allow_partial_start`` (rotated files pruned after shipping). Removing whole
records from the end leaves a valid shorter chain; ``expect_head`` (a hash
known from elsewhere, e.g. a CheckResponse's ``audit_hash`` or the
distributor) catches that.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from palisade.audit import keys
from palisade.audit.canonical import CanonicalError
from palisade.audit.record import CHAIN_FIELDS, chain_hash


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, located: file, 1-based line, and the record's seq when readable."""

    file: str
    line: int
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        if self.seq is not None:
            where += f" (seq {self.seq})"
        return f"{where}: {self.message}"


@dataclass
class Result:
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = ""
    key_ids: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def _first_seq(path: Path) -> float:
    try:
        with path.open("rb") as f:
            return float(json.loads(f.readline())["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("inf")


def order_files(paths: Iterable[Path]) -> list[Path]:
    """Files sorted by the seq of their first record (unreadable ones last, stable)."""
    unique = list(dict.fromkeys(Path(p) for p in paths))
    return sorted(unique, key=_first_seq)


class _Checker:
    def __init__(
        self, trusted: Sequence[Ed25519PublicKey], allow_partial_start: bool, result: Result
    ) -> None:
        self.trusted_ids = {keys.key_id(k) for k in trusted}
        self.allow_partial_start = allow_partial_start
        self.result = result
        self.prev_seq: int | None = None
        self.prev_hash = ""
        self.key_cache: dict[str, Ed25519PublicKey | None] = {}
        self.unsigned: list[tuple[str, int, int]] = []

    def find(self, file: str, line: int, seq: int | None, message: str) -> None:
        self.result.findings.append(Finding(file, line, seq, message))

    def _public(self, kid: str) -> Ed25519PublicKey | None:
        if kid not in self.key_cache:
            try:
                self.key_cache[kid] = keys.public_key_from_id(kid)
            except keys.AuditKeyError:
                self.key_cache[kid] = None
        return self.key_cache[kid]

    def check_line(self, file: str, lineno: int, raw: bytes) -> None:
        if not raw.endswith(b"\n"):
            self.find(file, lineno, None, "truncated record: the last line is incomplete")
            return
        try:
            record: Any = json.loads(raw)
        except ValueError:
            self.find(file, lineno, None, "garbled record: the line is not valid JSON")
            return
        missing = [f for f in CHAIN_FIELDS if not isinstance(record, dict) or f not in record]
        if missing:
            self.find(file, lineno, None, f"not an audit record: missing {', '.join(missing)}")
            return
        seq = record["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            self.find(file, lineno, None, "not an audit record: seq is not an integer")
            return
        self.check_record(file, lineno, seq, record)

    def check_record(self, file: str, lineno: int, seq: int, record: dict[str, Any]) -> None:
        res = self.result
        res.records += 1
        stored = str(record["hash"])
        try:
            recomputed = chain_hash(record)
        except CanonicalError:
            recomputed = ""
        if recomputed != stored:
            self.find(file, lineno, seq, "record edited: its hash does not match its content")
        kid = str(record["key_id"])
        signature = str(record["signature"])
        if not signature:
            # a record inside a group commit: covered by the next signed record's chain
            self.unsigned.append((file, lineno, seq))
        else:
            public = self._public(kid)
            if public is None:
                self.find(file, lineno, seq, f"unknown signing key {kid[:60]!r}")
            else:
                try:
                    sig = base64.b64decode(signature, validate=True)
                except (binascii.Error, ValueError):
                    sig = b""
                if not keys.verify_signature(public, sig, stored.encode()):
                    self.find(
                        file, lineno, seq, "bad signature: the record was not signed by its key"
                    )
                elif self.trusted_ids and kid not in self.trusted_ids:
                    self.find(file, lineno, seq, f"signed by an untrusted key {kid}")
                res.key_ids.add(kid)
            self.unsigned.clear()

        if self.prev_seq is None:
            if seq != 1 and not self.allow_partial_start:
                self.find(
                    file, lineno, seq, f"chain starts at seq {seq}: records 1..{seq - 1} missing"
                )
            elif seq == 1 and record["prev_hash"] != "":
                self.find(file, lineno, seq, "first record has a prev_hash: chain start forged")
        else:
            expected = self.prev_seq + 1
            if seq > expected:
                gap = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
                self.find(file, lineno, seq, f"record(s) removed: seq {gap} missing before this")
            elif seq < expected:
                self.find(
                    file,
                    lineno,
                    seq,
                    f"out of order: seq {seq} after seq {self.prev_seq} "
                    "(records reordered, inserted or duplicated)",
                )
            elif record["prev_hash"] != self.prev_hash:
                self.find(
                    file,
                    lineno,
                    seq,
                    "chain broken: prev_hash does not match the previous record "
                    "(a record was replaced or inserted before this one)",
                )
        if res.first_seq is None:
            res.first_seq = seq
        res.last_seq = seq
        res.head = stored
        self.prev_seq = seq
        self.prev_hash = stored


def verify_files(
    paths: Iterable[Path | str],
    *,
    trusted: Sequence[Ed25519PublicKey] = (),
    allow_partial_start: bool = False,
    expect_head: str = "",
) -> Result:
    """Verify one chain spread over ``paths``; every problem becomes a :class:`Finding`."""
    result = Result()
    checker = _Checker(trusted, allow_partial_start, result)
    ordered = order_files(Path(p) for p in paths)
    for path in ordered:
        try:
            with path.open("rb") as f:
                for lineno, raw in enumerate(f, start=1):
                    checker.check_line(str(path), lineno, raw)
        except OSError as exc:
            checker.find(str(path), 0, None, f"cannot read: {exc.strerror}")
    if checker.unsigned:
        file, line, first = checker.unsigned[0]
        final = checker.unsigned[-1][2]
        span = f"seq {first}" if first == final else f"seqs {first}..{final}"
        checker.find(
            file,
            line,
            first,
            f"unsigned tail: {span} not covered by any signature (a signed record "
            "that ended the batch was removed, or the writer died mid-batch)",
        )
    if result.records == 0 and not result.findings:
        name = str(ordered[0]) if ordered else "-"
        checker.find(name, 0, None, "no audit records found")
    if expect_head and result.head != expect_head:
        last = str(ordered[-1]) if ordered else "-"
        checker.find(
            last,
            0,
            result.last_seq,
            f"chain ends at {result.head or 'nothing'}, expected head {expect_head}: "
            "records removed from the end",
        )
    return result


def verify_records(
    records: Iterable[dict[str, Any]],
    *,
    name: str,
    trusted: Sequence[Ed25519PublicKey] = (),
    allow_partial_start: bool = False,
    expect_head: str = "",
) -> Result:
    """Verify one chain given as records (e.g. the distributor's copy) under ``name``;
    findings say ``name:N`` with N the record's position, as for files."""
    result = Result()
    checker = _Checker(trusted, allow_partial_start, result)
    for n, record in enumerate(records, start=1):
        missing = [f for f in CHAIN_FIELDS if f not in record]
        seq = record.get("seq")
        if missing or not isinstance(seq, int) or isinstance(seq, bool):
            checker.find(name, n, None, "not an audit record: missing or bad chain fields")
            continue
        checker.check_record(name, n, seq, record)
    if checker.unsigned:
        _, line, first = checker.unsigned[0]
        final = checker.unsigned[-1][2]
        span = f"seq {first}" if first == final else f"seqs {first}..{final}"
        checker.find(name, line, first, f"unsigned tail: {span} not covered by any signature")
    if result.records == 0 and not result.findings:
        checker.find(name, 0, None, "no audit records found")
    if expect_head and result.head != expect_head:
        checker.find(
            name,
            0,
            result.last_seq,
            f"chain ends at {result.head or 'nothing'}, expected head {expect_head}: "
            "records removed from the end",
        )
    return result
