"""The audit record: its fields, how it is sealed into the chain, and how one is checked.

A record is a flat JSON object whose keys are the field names of
``palisade.v1.AuditRecord`` (``proto/palisade/v1/audit.proto``). Decisions are
written in their domain spelling (``allow``, ``require_approval``), time as
RFC 3339 UTC with microseconds, the signature as base64.

Sealing is pure: given the content, the sequence number and the previous
hash, ``hash`` is ``sha256:<hex>`` over the canonical JSON of the record
without ``hash`` and ``signature`` (so ``seq``, ``prev_hash`` and ``key_id`` are
covered), and ``signature`` is Ed25519 over the ASCII of ``hash``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from palisade.audit import canonical
from palisade.audit.keys import Signer

#: Content fields in proto order, with their empty values.
CONTENT_DEFAULTS: dict[str, Any] = {
    "time": "",
    "source": "",
    "agent": "",
    "tenant": "",
    "on_behalf_of": "",
    "server": "",
    "tool": "",
    "session": "",
    "arguments_digest": "",
    "arguments": {},
    "decision": "",
    "rule_id": "",
    "reason": "",
    "bundle_revision": 0,
    "latency_ns": 0,
    "request_id": "",
    "dev_identity": False,
    "approval_id": "",
    "kind": "decision",
    "details": {},
}
CHAIN_FIELDS = ("seq", "prev_hash", "hash", "key_id", "signature")
ALL_FIELDS = frozenset(CONTENT_DEFAULTS) | frozenset(CHAIN_FIELDS)

#: ``kind`` of the record that closes a forwarded call: ``details.outcome`` is one of
#: :data:`OUTCOMES`, ``details.call_id`` the one its decision (or read) record carries.
#: A decision with a call id and no outcome is a call whose answer was never seen.
OUTCOME_KIND = "outcome"
OUTCOMES = ("completed", "upstream_error", "timed_out", "client_gone")


@dataclass(frozen=True, slots=True)
class Entry:
    """What a caller knows about one decision; the writer adds time, chain and signature.

    ``arguments`` are the *unredacted* arguments: the entry digests them and
    keeps only a redacted copy (see :meth:`content`).
    """

    agent: str = ""
    tenant: str = ""
    on_behalf_of: str = ""
    server: str = ""
    tool: str = ""
    session: str = ""
    arguments: Mapping[str, Any] = field(default_factory=dict)
    decision: str = ""
    rule_id: str = ""
    reason: str = ""
    bundle_revision: int = 0
    latency_ns: int = 0
    request_id: str = ""
    dev_identity: bool = False
    approval_id: str = ""
    kind: str = "decision"
    details: Mapping[str, Any] = field(default_factory=dict)


_time_cache: tuple[int, str] = (-1, "")


def format_time(epoch_s: float) -> str:
    """RFC 3339 UTC with microseconds; the seconds part is cached (one strftime a second)."""
    global _time_cache
    whole = int(epoch_s)
    cached_s, prefix = _time_cache
    if cached_s != whole:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _time_cache = (whole, prefix)
    micros = min(999_999, round((epoch_s - whole) * 1e6))
    return f"{prefix}.{micros:06d}Z"


def content_of(
    entry: Entry,
    *,
    time_s: float,
    source: str,
    redacted_arguments: Any,
    arguments_digest: str,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """The record's content fields (no chain fields). ``redacted_arguments`` and
    ``details`` must already be normalised (:func:`canonical.normalize`)."""
    return {
        "time": format_time(time_s),
        "source": source,
        "agent": entry.agent,
        "tenant": entry.tenant,
        "on_behalf_of": entry.on_behalf_of,
        "server": entry.server,
        "tool": entry.tool,
        "session": entry.session,
        "arguments_digest": arguments_digest,
        "arguments": redacted_arguments,
        "decision": entry.decision,
        "rule_id": entry.rule_id,
        "reason": entry.reason,
        "bundle_revision": int(entry.bundle_revision),
        "latency_ns": int(entry.latency_ns),
        "request_id": entry.request_id,
        "dev_identity": bool(entry.dev_identity),
        "approval_id": entry.approval_id,
        "kind": entry.kind,
        "details": details,
    }


def chain_hash(record: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over the canonical JSON of the record minus hash and signature."""
    body = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    return "sha256:" + hashlib.sha256(canonical.dumps(body)).hexdigest()


@dataclass(slots=True)
class Chained:
    """A record placed in the chain (seq, prev_hash, hash) but not yet signed or written."""

    record: dict[str, Any]
    body: bytes
    digest: str


def chain(content: Mapping[str, Any], *, seq: int, prev_hash: str, key_id: str) -> Chained:
    """Place ``content`` at ``seq`` after ``prev_hash``: one canonical serialization
    gives the body, and the body's SHA-256 the record's ``hash``."""
    record: dict[str, Any] = dict(content)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    record["key_id"] = key_id
    body = canonical.dumps(record)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    record["hash"] = digest
    return Chained(record, body, digest)


def line_of(chained: Chained, signature: str) -> bytes:
    """The JSON Lines line: the canonical body with ``hash`` and ``signature``
    appended as its last two members (verifiers recompute the canonical form,
    so member order in the file does not matter)."""
    chained.record["signature"] = signature
    return b"".join(
        (
            chained.body[:-1],
            b',"hash":"',
            chained.digest.encode(),
            b'","signature":"',
            signature.encode(),
            b'"}\n',
        )
    )


def sign(chained: Chained, signer: Signer) -> str:
    return base64.b64encode(signer.sign(chained.digest.encode())).decode()


def seal(
    content: Mapping[str, Any], *, seq: int, prev_hash: str, signer: Signer
) -> tuple[dict[str, Any], bytes]:
    """The complete, signed record and its line (see :func:`chain`, :func:`line_of`)."""
    chained = chain(content, seq=seq, prev_hash=prev_hash, key_id=signer.key_id)
    line = line_of(chained, sign(chained, signer))
    return chained.record, line
