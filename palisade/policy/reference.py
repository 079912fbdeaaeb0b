"""A naive, obviously-correct evaluator: the oracle the property tests hold the engine to.

It reads the bundle's dataclasses directly, loops over every rule in file
order and uses ``fnmatch`` and a fresh CEL compile per rule: no indexes, no
caches, no shared code with :mod:`palisade.policy.engine` beyond the plain
types. It covers the registry, rules, default and failure modes, and the
mutation cap (given the count of mutating calls already made), not rate
limits or spend caps. It returns only (decision, rule id).
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from palisade.bundle import cel_ext as cel
from palisade.bundle.schema import Bundle, FailureMode, Match, RuleMode
from palisade.policy.types import Call, Decision, Risk


def _any(patterns: tuple[str, ...], value: str) -> bool:
    return not patterns or any(fnmatchcase(value, p) for p in patterns)


def _matches(m: Match, call: Call, tenant: str, risk: Risk | None) -> bool:
    if not _any(m.servers, call.server) or not _any(m.tools, call.tool):
        return False
    if m.risk and risk not in m.risk:
        return False
    if not _any(m.agents, call.agent) or not _any(m.tenants, tenant):
        return False
    for key, pattern in m.labels.items():
        if key not in call.labels or not fnmatchcase(call.labels[key], pattern):
            return False
    return True


def reference_decide(
    bundle: Bundle, call: Call, mutations_so_far: int = 0, agent_mutations_in_window: int = 0
) -> tuple[Decision, str]:
    """Decide ``call`` the slow, plain way; return (decision, rule id)."""
    server = next((s for s in bundle.servers if s.name == call.server), None)
    if server is None:
        return Decision.DENY, "registry"
    if server.versions or server.images:
        ok = call.server_version in server.images or any(
            fnmatchcase(call.server_version, v) for v in server.versions
        )
        if not ok:
            return Decision.DENY, "registry"
    tool = next((t for t in server.tools if t.name == call.tool), None)
    if tool is None:
        return Decision.DENY, "registry"
    agent = next((a for a in bundle.agents if a.id == call.agent), None)
    if agent is None:
        return Decision.DENY, "registry"
    risk = tool.risk if tool.risk is not None else call.server_declared_risk
    failed = Decision.ALLOW if bundle.failure_mode is FailureMode.OPEN else Decision.DENY

    decision, rule_id = bundle.default_decision, "default"
    for rule in bundle.rules:
        if rule.mode is RuleMode.AUDIT:  # never decides; what it would is not compared here
            continue
        if not _matches(rule.match, call, agent.tenant, risk):
            continue
        if rule.when:
            env: dict[str, Any] = {
                "args": dict(call.arguments),
                "agent": {
                    "id": agent.id,
                    "tenant": agent.tenant,
                    "namespaces": list(agent.namespaces),
                    "scopes": list(agent.scopes),
                },
                "call": {
                    "server": call.server,
                    "tool": call.tool,
                    "risk": risk.value if risk else "",
                    "session": call.session,
                    "on_behalf_of": call.on_behalf_of,
                    "labels": dict(call.labels),
                },
            }
            try:
                result = cel.compile(rule.when).execute(env)
            except Exception:
                return failed, "failure"
            if not isinstance(result, bool):
                return failed, "failure"
            if not result:
                continue
        decision, rule_id = rule.decision, rule.id
        break

    cap = bundle.budgets.mutations_per_session
    mutating = risk is None or risk is not Risk.READ
    if decision is Decision.ALLOW and cap is not None and mutating and mutations_so_far >= cap:
        return Decision.REQUIRE_APPROVAL, "budget/mutationsPerSession"
    window = bundle.budgets.mutations_per_agent
    if (
        decision is Decision.ALLOW
        and window is not None
        and mutating
        and agent_mutations_in_window >= window.limit
    ):
        return Decision.REQUIRE_APPROVAL, "budget/mutationsPerAgent"
    return decision, rule_id
