"""Settling ``require_approval`` verdicts with the answers humans gave.

:class:`Approvals` is the proxy's :class:`~sidecar.core.ApprovalDesk`: an unexpired
approval of this exact call (agent, server, tool, arguments, session: one digest)
lets it through once; a denial answers it as a denial for a window; otherwise an
``ApprovalRequest`` is queued for the stream. A rule asking for N approvers
(``Verdict.approvers``) is let through only by an answer naming N distinct
people: the distributor counts them, and the sidecar checks the signed answer
again, so a distributor bug or an old replica cannot grant it on fewer. Pure
apart from the injected clock, the :class:`~palisade.distribution.ApprovalBook`
the client fills, and the optional state file.

With a state file (in the sidecar's ``--state-dir``), the requests not yet
answered and used survive a restart: they are asked again once the stream is
back, and the distributor answers an id it has already decided again, so an
approval given while the sidecar restarted still lets the call through, once.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from palisade.audit.redact import redact
from palisade.distribution import ApprovalBook, call_digest
from palisade.distribution.lkg import atomic_write
from palisade.policy.types import Call, Decision, Verdict
from palisade.v1 import distribution_pb2, policy_pb2

log = logging.getLogger(__name__)


#: Pending approval requests and remembered denials kept per sidecar.
APPROVALS_LIMIT = 4096


@dataclass
class _Asked:
    approval_id: str
    request: distribution_pb2.ApprovalRequest
    sent: bool = False
    answered: bool = False


@dataclass(frozen=True, slots=True)
class _Denied:
    approval_id: str
    by: str
    comment: str
    until: float


def check_request_of(call: Call, secret_names: Iterable[str]) -> policy_pb2.CheckRequest:
    """The call as the approver sees it: arguments with secret-marked fields redacted."""
    req = policy_pb2.CheckRequest(
        agent=call.agent,
        on_behalf_of=call.on_behalf_of,
        server=call.server,
        server_version=call.server_version,
        tool=call.tool,
        session=call.session,
        request_id=call.request_id,
    )
    req.labels.update(dict(call.labels))
    try:
        req.arguments.update(redact(dict(call.arguments), secret_names))
    except (ValueError, TypeError):  # not representable as a Struct: digest still binds it
        req.arguments.Clear()
    return req


def _enough(decision: distribution_pb2.ApprovalDecision, required: int) -> bool:
    """Whether the approval names ``required`` distinct people (one needs no list: an
    answer of a distributor from before approvers were counted names one in ``by``)."""
    return required <= 1 or len(set(decision.approvers)) >= required


class Approvals:
    """Settles ``require_approval`` verdicts with the answers the client received.

    Pure apart from the injected clock and the book the client fills; requests to
    send wait in :meth:`unsent` for :class:`SidecarFleet` to carry out.
    """

    def __init__(
        self,
        book: ApprovalBook,
        *,
        denial_window_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_request: Callable[[], None] | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.book = book
        self.denial_window_s = denial_window_s
        self._clock = clock
        self._on_request = on_request
        self._asked: collections.OrderedDict[str, _Asked] = collections.OrderedDict()
        self._denied: collections.OrderedDict[str, _Denied] = collections.OrderedDict()
        self.granted = 0
        self.refused = 0
        self._state_file = state_file
        self._load()

    # -- the state file ---------------------------------------------------------------
    def _load(self) -> None:
        if self._state_file is None or not self._state_file.exists():
            return
        try:
            rows = json.loads(self._state_file.read_text())["asked"]
            for row in rows[-APPROVALS_LIMIT:]:
                request = distribution_pb2.ApprovalRequest.FromString(
                    base64.b64decode(row["request"])
                )
                self._asked[request.call_digest] = _Asked(request.approval_id, request)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # a damaged file costs only the requests in it: they are asked for anew
            log.warning("approval state unreadable; starting empty", extra={"error": str(exc)})
            self._asked.clear()
            return
        if self._asked:
            log.info("approval requests restored", extra={"pending": len(self._asked)})

    def _save(self) -> None:
        if self._state_file is None:
            return
        rows = [
            {"request": base64.b64encode(a.request.SerializeToString()).decode()}
            for a in self._asked.values()
            if not a.answered
        ]
        try:
            atomic_write(self._state_file, json.dumps({"asked": rows}).encode())
        except OSError as exc:
            log.warning("approval state not saved", extra={"error": str(exc)})

    @property
    def pending(self) -> int:
        return sum(1 for a in self._asked.values() if not a.answered)

    def settle(
        self, call: Call, verdict: Verdict, secret_names: frozenset[str]
    ) -> tuple[Verdict, dict[str, Any]]:
        digest = call_digest(
            agent=call.agent,
            server=call.server,
            tool=call.tool,
            arguments=call.arguments,
            session=call.session,
        )
        self._collect()
        granted = self.book.consume(digest)
        if granted is not None and not _enough(granted, verdict.approvers):
            log.warning(
                "approval with too few approvers ignored",
                extra={
                    "approval": granted.approval_id,
                    "approvers": list(granted.approvers),
                    "required": verdict.approvers,
                },
            )
            self.refused += 1
            granted = None
            asked = self._asked.get(digest)
            if asked is not None:
                asked.answered = True  # asked for anew below
        if granted is not None:
            self._asked.pop(digest, None)
            self._save()
            self.granted += 1
            by = f"approved by {granted.by or 'a human'}"
            reason = f"{by}: {granted.comment}" if granted.comment else by
            allowed = replace(
                verdict, decision=Decision.ALLOW, reason=reason, approval_id=granted.approval_id
            )
            details: dict[str, Any] = {"approval": "granted", "approved_by": granted.by}
            if granted.approvers:
                details["approvers"] = list(granted.approvers)
            return allowed, details
        denied = self._denied.get(digest)
        if denied is not None and denied.until > self._clock():
            self.refused += 1
            by = f"approval {denied.approval_id} was denied by {denied.by or 'a human'}"
            reason = f"{by}: {denied.comment}" if denied.comment else by
            refused = replace(
                verdict, decision=Decision.DENY, reason=reason, approval_id=denied.approval_id
            )
            return refused, {"approval": "denied", "denied_by": denied.by}
        asked = self._asked.get(digest)
        if asked is None or asked.answered:
            asked = self._ask(call, verdict, secret_names, digest)
        return replace(verdict, approval_id=asked.approval_id), {"approval": "requested"}

    def _ask(
        self, call: Call, verdict: Verdict, secret_names: Iterable[str], digest: str
    ) -> _Asked:
        # Unique per request: an id the distributor decided once is never asked again.
        base = verdict.approval_id or "apr"
        approval_id = f"{base}-{secrets.token_hex(4)}"
        request = distribution_pb2.ApprovalRequest(
            approval_id=approval_id,
            call=check_request_of(call, secret_names),
            tenant=verdict.tenant,
            rule_id=verdict.rule_id,
            reason=verdict.reason,
            call_digest=digest,
            approvers=max(verdict.approvers, 1),
        )
        asked = _Asked(approval_id, request)
        self._asked[digest] = asked
        self._asked.move_to_end(digest)
        while len(self._asked) > APPROVALS_LIMIT:
            self._asked.popitem(last=False)
        self._save()
        log.info(
            "approval requested",
            extra={"approval": approval_id, "agent": call.agent, "tool": call.tool},
        )
        if self._on_request is not None:
            self._on_request()
        return asked

    def _collect(self) -> None:
        """Note answers that arrived: denials are remembered, asked calls marked answered."""
        now = self._clock()
        for approval_id, decision in list(self.book.decisions.items()):
            asked = self._asked.get(decision.call_digest)
            if asked is not None and asked.approval_id == approval_id:
                asked.answered = True
            if decision.approved:
                continue
            del self.book.decisions[approval_id]
            decided = decision.expires.ToNanoseconds() / 1e9 if decision.HasField("expires") else 0
            self._denied[decision.call_digest] = _Denied(
                approval_id, decision.by, decision.comment, (decided or now) + self.denial_window_s
            )
            self._denied.move_to_end(decision.call_digest)
        for digest, denied in list(self._denied.items()):
            if denied.until <= now or len(self._denied) > APPROVALS_LIMIT:
                del self._denied[digest]

    # -- what the fleet sends ---------------------------------------------------------
    def unsent(self) -> list[distribution_pb2.ApprovalRequest]:
        return [a.request for a in self._asked.values() if not a.sent and not a.answered]

    def mark_sent(self, approval_id: str) -> None:
        for asked in self._asked.values():
            if asked.approval_id == approval_id:
                asked.sent = True

    def resend_all(self) -> None:
        """After a reconnect: ask again for every unanswered call (the store keeps one)."""
        for asked in self._asked.values():
            asked.sent = False
