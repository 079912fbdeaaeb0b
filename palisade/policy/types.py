"""Plain data the decision engine takes and gives: a tool call in, a verdict out.

These types are the in-process mirror of ``palisade.v1.CheckRequest`` and
``CheckResponse`` (see ``proto/palisade/v1/policy.proto``). They carry no
behaviour beyond small conveniences, so the engine stays a pure function and
adapters (gRPC, the MCP proxy, tests) convert at their edge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class Decision(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"
    THROTTLE = "throttle"


class Risk(StrEnum):
    READ = "read"
    WRITE = "write"
    DESTRUCTIVE = "destructive"
    ADMIN = "admin"

    @property
    def mutating(self) -> bool:
        """Every class but ``read`` changes something and counts against mutation caps."""
        return self is not Risk.READ


#: Monotonic seconds; injected so budgets can be tested with a fake clock.
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call to decide, after identity has been established."""

    agent: str
    server: str
    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    session: str = ""
    on_behalf_of: str = ""
    server_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    #: Risk from the upstream server's own tool annotations; used only when the
    #: registry has none. Never taken from the client.
    server_declared_risk: Risk | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule the engine considered, and why it did or did not match."""

    rule_id: str
    matched: bool
    detail: str


@dataclass(frozen=True, slots=True)
class WouldBe:
    """What a rule in ``mode: audit`` would have decided (the call went on without it)."""

    rule_id: str
    decision: Decision
    reason: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The engine's answer. Every verdict names the rule, a reason and the revision."""

    decision: Decision
    rule_id: str
    reason: str
    bundle_revision: int
    bundle_digest: str = ""
    tenant: str = ""
    risk: Risk | None = None
    approval_id: str = ""
    retry_after_s: float = 0.0
    explanation: tuple[RuleTrace, ...] = ()
    #: For ``require_approval``: how many distinct people must approve (the rule's
    #: ``approvers``).
    approvers: int = 1
    #: Rules in ``mode: audit`` that matched before the deciding rule, in file order.
    would_be: tuple[WouldBe, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW


class DecisionEngine(Protocol):
    """What adapters call. Implementations must never raise for a well-formed call."""

    def decide(self, call: Call, *, dry_run: bool = False, explain: bool = False) -> Verdict: ...
