"""Client side of approvals: the call digest, and the book of answers received.

A ``require_approval`` verdict becomes an ``ApprovalRequest`` carrying a digest
of the exact call (agent, server, tool, arguments, session). The distributor's
answer carries the same digest and an expiry; an approved call is let through
only when it is retried with an identical digest before the expiry, and only
once. Pure data and an injected clock; the client feeds it from its stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from palisade.bundle import canonical_json
from palisade.policy.types import Clock
from palisade.v1 import distribution_pb2


def call_digest(
    *, agent: str, server: str, tool: str, arguments: Mapping[str, Any], session: str = ""
) -> str:
    """Binds an approval to one exact call; any other argument value is another call."""
    doc = {"agent": agent, "server": server, "tool": tool, "args": dict(arguments), "s": session}
    return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()


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
