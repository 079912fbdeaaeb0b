"""Client side of approvals: the call digest, and the book of answers received.

A ``require_approval`` verdict becomes an ``ApprovalRequest`` carrying a digest
of the exact call (agent, server, tool, arguments, session). The distributor's
answer carries the same digest and an expiry; an approved call is let through
only when it is retried with an identical digest before the expiry, and only
once. Pure data and an injected clock; the client feeds it from its stream.

Answers are signed by the distributor with its bundle keys
(:func:`sign_decision`) and the client records only those that verify against
the keys it trusts for bundles (:func:`verify_decision`): an approval lets a
call through, so it must not be forgeable by whoever can reach the stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from palisade.bundle import canonical_json
from palisade.bundle.signing import TrustedKeys, key_id, valid_signers
from palisade.policy.types import Clock
from palisade.v1 import distribution_pb2


def call_digest(
    *, agent: str, server: str, tool: str, arguments: Mapping[str, Any], session: str = ""
) -> str:
    """Binds an approval to one exact call; any other argument value is another call."""
    doc = {"agent": agent, "server": server, "tool": tool, "args": dict(arguments), "s": session}
    return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


#: Domain separation: these bytes can never be mistaken for a bundle's signing payload.
_DECISION_CONTEXT = b"palisade.v1.ApprovalDecision\n"


def signing_payload(decision: distribution_pb2.ApprovalDecision) -> bytes:
    """What a signature covers: every field of the answer but the signatures."""
    expires = decision.expires.ToNanoseconds() if decision.HasField("expires") else 0
    doc: dict[str, Any] = {
        "approval_id": decision.approval_id,
        "approved": decision.approved,
        "by": decision.by,
        "comment": decision.comment,
        "expires_ns": expires,
        "call_digest": decision.call_digest,
    }
    if decision.approvers:  # absent when empty: answers signed before it still verify
        doc["approvers"] = list(decision.approvers)
    return _DECISION_CONTEXT + canonical_json(doc)


def sign_decision(
    decision: distribution_pb2.ApprovalDecision, keys: Iterable[Ed25519PrivateKey]
) -> distribution_pb2.ApprovalDecision:
    """``decision`` with one signature per key (replacing any it had)."""
    del decision.signatures[:]
    payload = signing_payload(decision)
    for key in keys:
        decision.signatures.add(key_id=key_id(key), signature=key.sign(payload))
    return decision


def verify_decision(decision: distribution_pb2.ApprovalDecision, trusted: TrustedKeys) -> str:
    """Why ``decision`` must not be believed, or "" when a trusted key signed it."""
    if not len(trusted):
        return "no trusted keys configured"
    if valid_signers(decision.signatures, signing_payload(decision), trusted):
        return ""
    seen = ", ".join(s.key_id or "(no id)" for s in decision.signatures) or "none"
    return f"no valid signature by a trusted key (signatures by: {seen})"


@dataclass
class ApprovalBook:
    clock: Clock = time.time
    decisions: dict[str, distribution_pb2.ApprovalDecision] = field(default_factory=dict)
    _waiters: dict[str, list[asyncio.Future[distribution_pb2.ApprovalDecision]]] = field(
        default_factory=dict
    )

    def record(self, decision: distribution_pb2.ApprovalDecision) -> None:
        self.decisions[decision.approval_id] = decision
        for fut in self._waiters.pop(decision.approval_id, []):
            if not fut.done():
                fut.set_result(decision)

    def get(self, approval_id: str) -> distribution_pb2.ApprovalDecision | None:
        return self.decisions.get(approval_id)

    def consume(self, digest: str) -> distribution_pb2.ApprovalDecision | None:
        """The unexpired approval for this exact call, used up by this retry; else None."""
        now = self.clock()
        for approval_id, decision in list(self.decisions.items()):
            expires = decision.expires.ToNanoseconds() / 1e9 if decision.HasField("expires") else 0
            if expires and expires < now:
                del self.decisions[approval_id]
                continue
            if decision.approved and decision.call_digest == digest:
                del self.decisions[approval_id]
                return decision
        return None

    async def wait(self, approval_id: str) -> distribution_pb2.ApprovalDecision:
        """The answer for ``approval_id``; callers bound the wait with ``asyncio.timeout``."""
        known = self.decisions.get(approval_id)
        if known is not None:
            return known
        fut: asyncio.Future[distribution_pb2.ApprovalDecision] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters.setdefault(approval_id, []).append(fut)
        return await fut
