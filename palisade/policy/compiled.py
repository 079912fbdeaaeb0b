"""A bundle's parts compiled for deciding: matchers, rules, limits, routes, registry.

Plain data with precomputed predicates; :mod:`palisade.policy.engine` builds
and walks them. Nothing here decides; nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from palisade.bundle import cel_ext as cel
from palisade.bundle.globs import compile_glob, compile_globs
from palisade.bundle.schema import Agent, Match, RatePer, Rule, RuleMode, Server, Tool
from palisade.policy.types import Decision, Risk, Verdict

Pred = Callable[[str], bool] | None
LabelPreds = tuple[tuple[str, Callable[[str], bool]], ...]


class Matcher:
    """A compiled ``match`` block."""

    __slots__ = ("agents", "labels", "risks", "servers", "tenants", "tools")

    def __init__(self, m: Match) -> None:
        self.servers: Pred = compile_globs(m.servers)
        self.tools: Pred = compile_globs(m.tools)
        self.risks: frozenset[Risk] | None = frozenset(m.risk) if m.risk else None
        self.agents: Pred = compile_globs(m.agents)
        self.tenants: Pred = compile_globs(m.tenants)
        self.labels: LabelPreds | None = (
            tuple((k, compile_glob(v)) for k, v in m.labels.items()) if m.labels else None
        )

    def static(self, server: str, tool: str, agent: Agent, risk: Risk | None) -> bool:
        """Everything but labels, for one route."""
        return (
            (self.servers is None or self.servers(server))
            and (self.tools is None or self.tools(tool))
            and (self.risks is None or (risk is not None and risk in self.risks))
            and (self.agents is None or self.agents(agent.id))
            and (self.tenants is None or self.tenants(agent.tenant))
        )


def labels_ok(wanted: LabelPreds, labels: Mapping[str, str]) -> bool:
    for key, pred in wanted:
        value = labels.get(key)
        if value is None or not pred(value):
            return False
    return True


class CompiledRule:
    __slots__ = (
        "approvers",
        "audit",
        "decision",
        "id",
        "index",
        "matcher",
        "needs_agent",
        "needs_call",
        "program",
        "reason",
        "retry_after",
        "when",
    )

    def __init__(self, index: int, rule: Rule) -> None:
        self.index: int = index
        self.id: str = rule.id
        self.decision: Decision = rule.decision
        self.reason: str = rule.reason or f"rule {rule.id!r} decided {rule.decision.value}"
        self.retry_after: float = rule.retry_after_seconds
        self.approvers: int = rule.approvers
        #: ``mode: audit``: recorded as what it would decide; the next rule decides.
        self.audit: bool = rule.mode is RuleMode.AUDIT
        self.matcher = Matcher(rule.match)
        self.when: str = rule.when
        self.program: Any = cel.compile(rule.when) if rule.when else None
        # Converting each variable into CEL costs microseconds: pass only those used.
        used = set(self.program.variables()) if self.program is not None else set()
        self.needs_agent = "agent" in used
        self.needs_call = "call" in used


class Limit:
    """A compiled rate limit or spend cap."""

    __slots__ = ("burst", "id", "labels", "limit", "matcher", "per", "rate", "window")

    def __init__(
        self,
        id: str,
        match: Match,
        *,
        per: RatePer = RatePer.AGENT,
        rate: float = 0.0,
        burst: float = 0.0,
        limit: float = 0.0,
        window: float = 0.0,
    ) -> None:
        self.id = id
        self.matcher = Matcher(match)
        self.labels = self.matcher.labels
        self.per = per
        self.rate = rate
        self.burst = burst
        self.limit = limit
        self.window = window


class Route:
    """Everything about (server, tool, agent, risk) that does not change per call."""

    __slots__ = (
        "agent",
        "agent_view",
        "caps",
        "cost",
        "fixed",
        "mutating",
        "rates",
        "risk",
        "rules",
        "server",
        "tool",
        "verdicts",
    )

    def __init__(
        self,
        server: str,
        tool: Tool,
        agent: Agent,
        risk: Risk | None,
        rules: tuple[CompiledRule, ...],
        rates: tuple[Limit, ...],
        caps: tuple[Limit, ...],
        mutating: bool,
    ) -> None:
        self.server = server
        self.tool = tool.name
        self.agent = agent
        self.risk = risk
        self.rules = rules
        self.rates = rates
        self.caps = caps
        self.cost = tool.cost
        self.mutating = mutating
        self.agent_view: dict[str, Any] = {
            "id": agent.id,
            "tenant": agent.tenant,
            "namespaces": list(agent.namespaces),
            "scopes": list(agent.scopes),
        }
        self.verdicts: dict[int, Verdict] = {}
        #: The verdict every call on this route gets, when nothing depends on the call.
        self.fixed: Verdict | None = None


class ToolEntry:
    """A registered tool and the routes through it, keyed by agent id.

    When the registry gives the tool a risk (the usual case) the key is the agent
    id alone, a string whose hash Python caches; otherwise the risk the server
    declared joins the key.
    """

    __slots__ = ("routes", "tool")

    def __init__(self, tool: Tool) -> None:
        self.tool = tool
        self.routes: dict[Any, Route] = {}


class ServerEntry:
    __slots__ = ("any_version", "images", "name", "tools", "version_cache", "versions")

    def __init__(self, s: Server) -> None:
        self.name = s.name
        self.tools: dict[str, ToolEntry] = {t.name: ToolEntry(t) for t in s.tools}
        self.images = frozenset(s.images)
        self.versions: Pred = compile_globs(s.versions) if s.versions else None
        self.any_version = (not s.versions and not s.images) or "*" in s.versions
        self.version_cache: dict[str, bool] = {}

    def version_ok(self, version: str) -> bool:
        ok = self.version_cache.get(version)
        if ok is None:
            ok = (
                self.any_version
                or version in self.images
                or (self.versions is not None and self.versions(version))
            )
            if len(self.version_cache) > 1024:
                self.version_cache.clear()
            self.version_cache[version] = ok
        return ok
