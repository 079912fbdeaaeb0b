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


def format_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def content_of(
    entry: Entry,
    *,
    time_s: float,
    source: str,
    redacted_arguments: Any,
    arguments_digest: str,
) -> dict[str, Any]:
    """The record's content fields (no chain fields), normalised for canonical JSON."""
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
        "arguments": canonical.normalize(redacted_arguments),
        "decision": entry.decision,
        "rule_id": entry.rule_id,
        "reason": entry.reason,
        "bundle_revision": int(entry.bundle_revision),
        "latency_ns": int(entry.latency_ns),
        "request_id": entry.request_id,
        "dev_identity": bool(entry.dev_identity),
        "approval_id": entry.approval_id,
        "kind": entry.kind,
        "details": canonical.normalize(dict(entry.details)),
    }


def chain_hash(record: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` over the canonical JSON of the record minus hash and signature."""
    body = {k: v for k, v in record.items() if k not in ("hash", "signature")}
    return "sha256:" + hashlib.sha256(canonical.dumps(body)).hexdigest()


def seal(content: Mapping[str, Any], *, seq: int, prev_hash: str, signer: Signer) -> dict[str, Any]:
    """A complete record: content plus seq, prev_hash, key_id, hash and signature."""
    record: dict[str, Any] = dict(content)
    record["seq"] = seq
    record["prev_hash"] = prev_hash
    record["key_id"] = signer.key_id
    digest = chain_hash(record)
    record["hash"] = digest
    record["signature"] = base64.b64encode(signer.sign(digest.encode())).decode()
    return record


def to_line(record: Mapping[str, Any]) -> bytes:
    """One JSON Lines line (canonical JSON plus newline)."""
    return canonical.dumps(record) + b"\n"
