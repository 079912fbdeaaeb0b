"""Admission of shipped audit records into a central copy: the verifier's rules, per batch.

Pure: the store gives the chain's stored head, the keys registered for the
authenticated source and which of the batch's hashes it already holds; this
says which leading records of the batch may be stored (and in which chain),
which were stored before, and the first one refused with its reason.

A source's records form chains exactly as :mod:`palisade.audit.verify` defines
them: a chain starts at seq 1 with an empty ``prev_hash``; each later record has
``seq`` one more than the previous record's and ``prev_hash`` equal to its
``hash``. A writer restarted on its own log continues its chain; a writer that
lost its log (a new state directory under the same source, e.g. a node agent
pod on the same node) starts a new chain at seq 1, which becomes the source's
next chain (1, 2, ...). Every record must hash to its content and name a key
registered for the source; a record inside a group commit carries no
signature and is admitted only together with the signed record that closes
it (the chain links it to that signature). A record whose hash is already
stored for the source is a duplicate (a batch resent after a lost answer, or
a replay): never stored twice, never the start of a new chain.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palisade.audit import keys
from palisade.audit.canonical import CanonicalError
from palisade.audit.record import CHAIN_FIELDS, chain_hash

#: Refusal reasons (the lower-case names of ``palisade.v1.AuditRefusalReason``).
MALFORMED = "malformed"
EDITED = "edited"
UNKNOWN_KEY = "unknown_key"
BAD_SIGNATURE = "bad_signature"
BAD_START = "bad_start"
GAP = "gap"
CHAIN_BROKEN = "chain_broken"
CONFLICT = "conflict"
UNSIGNED = "unsigned"
REASONS = (
    MALFORMED,
    EDITED,
    UNKNOWN_KEY,
    BAD_SIGNATURE,
    BAD_START,
    GAP,
    CHAIN_BROKEN,
    CONFLICT,
    UNSIGNED,
)


@dataclass(frozen=True, slots=True)
class Head:
    """The last stored record of a source's newest chain."""

    chain: int
    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Refusal:
    index: int
    seq: int
    hash: str
    reason: str
    message: str


@dataclass
class Admission:
    #: (index in the batch, chain number) of each record to store, in batch order
    accepted: list[tuple[int, int]] = field(default_factory=list)
    #: indexes of records already stored
    duplicates: list[int] = field(default_factory=list)
    #: how many leading records of the batch are stored once ``accepted`` is
    stored_count: int = 0
    refused: Refusal | None = None
    #: the head once ``accepted`` is stored (the old one when nothing is)
    head: Head | None = None


def _signature_ok(record: Mapping[str, Any]) -> bool:
    try:
        public = keys.public_key_from_id(str(record["key_id"]))
        sig = base64.b64decode(str(record["signature"]), validate=True)
    except (keys.AuditKeyError, binascii.Error, ValueError):
        return False
    return keys.verify_signature(public, sig, str(record["hash"]).encode())


def admit(
    records: Sequence[Mapping[str, Any]],
    *,
    head: Head | None,
    registered: Collection[str],
    stored: Collection[str],
) -> Admission:
    """Which of ``records`` (one source's, in batch order) to store; see the module doc.

    ``registered``: key ids registered for the source; ``stored``: hashes of the
    batch the store already holds for it. Stops at the first refused record.
    """
    out = Admission(head=head)
    cur = head
    pending: list[tuple[int, int]] = []  # unsigned records waiting for their closer
    seen: set[str] = set()

    def refuse(i: int, rec: Mapping[str, Any], reason: str, message: str) -> Admission:
        # stored_count and head stay before any pending (unsigned) records
        out.refused = Refusal(i, _int(rec.get("seq")), str(rec.get("hash", "")), reason, message)
        return out

    for i, rec in enumerate(records):
        h = str(rec.get("hash", ""))
        if h and (h in stored or h in seen):
            if pending:
                return refuse(i, rec, UNSIGNED, _unsigned(records, pending))
            out.duplicates.append(i)
            out.stored_count = i + 1
            continue
        missing = [f for f in CHAIN_FIELDS if f not in rec]
        seq = rec.get("seq")
        if missing or not h or not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            why = f"missing {', '.join(missing)}" if missing else "no hash or no seq"
            return refuse(i, rec, MALFORMED, f"not an audit record: {why}")
        try:
            recomputed = chain_hash(rec)
        except CanonicalError:
            recomputed = ""
        if recomputed != h:
            return refuse(i, rec, EDITED, "record edited: its hash does not match its content")
        kid = str(rec["key_id"])
        if kid not in registered:
            return refuse(
                i,
                rec,
                UNKNOWN_KEY,
                f"signing key {kid[:60]} is not registered for this client",
            )
        prev = str(rec["prev_hash"])
        if seq == 1:
            if prev:
                return refuse(i, rec, BAD_START, "first record has a prev_hash: chain start forged")
            if pending:
                return refuse(i, rec, UNSIGNED, _unsigned(records, pending))
            chain_no = cur.chain + 1 if cur is not None else 1
        elif cur is None:
            return refuse(
                i, rec, BAD_START, f"chain starts at seq {seq}: records 1..{seq - 1} never stored"
            )
        elif seq <= cur.seq:
            return refuse(
                i,
                rec,
                CONFLICT,
                f"seq {seq} is already stored with another hash (history rewritten)",
            )
        elif seq > cur.seq + 1:
            gap = f"{cur.seq + 1}" if seq == cur.seq + 2 else f"{cur.seq + 1}..{seq - 1}"
            return refuse(i, rec, GAP, f"record(s) missing: seq {gap} never stored before this")
        elif prev != cur.hash:
            return refuse(
                i,
                rec,
                CHAIN_BROKEN,
                "chain broken: prev_hash is not the hash of the stored record before it",
            )
        else:
            chain_no = cur.chain
        if not rec.get("signature"):
            pending.append((i, chain_no))
            cur = Head(chain_no, seq, h)
            seen.add(h)
            continue
        if not _signature_ok(rec):
            return refuse(
                i, rec, BAD_SIGNATURE, "bad signature: the record was not signed by its key"
            )
        cur = Head(chain_no, seq, h)
        seen.add(h)
        out.accepted.extend(pending)
        out.accepted.append((i, chain_no))
        pending = []
        out.stored_count = i + 1
        out.head = cur
    if pending:
        last = records[pending[-1][0]]
        out.refused = Refusal(
            pending[0][0],
            _int(records[pending[0][0]].get("seq")),
            str(records[pending[0][0]].get("hash", "")),
            UNSIGNED,
            _unsigned(records, pending) + f" (the batch ends at seq {_int(last.get('seq'))})",
        )
    return out


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _unsigned(records: Sequence[Mapping[str, Any]], pending: list[tuple[int, int]]) -> str:
    a = _int(records[pending[0][0]].get("seq"))
    b = _int(records[pending[-1][0]].get("seq"))
    span = f"seq {a}" if a == b else f"seqs {a}..{b}"
    return f"unsigned: {span} not closed by a signed record of their group commit"
