"""Audit records as a real writer makes them: sealed into a hash chain, signed, for one source.

The distributor stores only records that verify (signature by a key registered for the
sender, chain continuous with what it holds), so tests that ship records build them here.
"""

from __future__ import annotations

from typing import Any

from palisade.audit import Entry, Signer, to_proto
from palisade.audit.keys import registration_proof
from palisade.audit.record import content_of, seal
from palisade.v1 import audit_pb2, distribution_pb2


class Chain:
    """The next records of ``source``'s chain, signed by ``signer`` (a new key by default)."""

    def __init__(self, source: str, signer: Signer | None = None) -> None:
        self.source = source
        self.signer = signer or Signer.generate()
        self.seq = 0
        self.head = ""

    def key(self) -> distribution_pb2.AuditKey:
        """This chain's key as a client registers it (with its proof of possession)."""
        return distribution_pb2.AuditKey(
            key_id=self.signer.key_id,
            source=self.source,
            proof=registration_proof(self.signer, self.source),
        )

    def record(self, *, time_s: float = 1_000.0, **fields: Any) -> dict[str, Any]:
        """The next record (as the writer writes it), appended to the chain."""
        content = content_of(
            Entry(**fields),
            time_s=time_s,
            source=self.source,
            redacted_arguments={},
            arguments_digest="",
            details={},
        )
        record, _ = seal(content, seq=self.seq + 1, prev_hash=self.head, signer=self.signer)
        self.seq, self.head = record["seq"], record["hash"]
        return record

    def protos(self, n: int, **fields: Any) -> list[audit_pb2.AuditRecord]:
        return [to_proto(self.record(**fields)) for _ in range(n)]
