"""The compiled decision engine: a bundle turned into lookups, deciding tool calls.

Order of evaluation (docs/bundle-format.md, "Order of evaluation"):

1. Registry: the server must be registered and run an allowed version or
   image; the tool must be registered for it; the agent must be declared.
   Otherwise DENY with rule id ``registry``.
2. Rules: the first rule in file order whose ``match`` and ``when`` hold
   decides. None -> ``defaultDecision`` with rule id ``default``.
3. Budgets, only for ALLOW: the mutation cap per session, then per agent over a
   window across its sessions (both -> REQUIRE_APPROVAL), then rate limits
   (-> THROTTLE), then spend caps (-> DENY); rule ids
   ``budget/mutationsPerSession``, ``budget/mutationsPerAgent`` and ``budget/<id>``.
4. A ``when`` that fails to evaluate (or is not a boolean) -> the bundle's
   ``failureMode``: DENY (closed, default) or ALLOW (open), rule id ``failure``.

How it stays fast: everything that depends only on (server, tool, agent,
risk) is worked out once, the first time that combination is seen, into a
:class:`Route`: the rules that can match it (in file order, already
filtered by server, tool, risk, agent and tenant), the budgets that apply,
and the agent's CEL view. A decision is then a few dict lookups plus the
per-call checks that truly depend on the call (labels, ``when``, budgets).
The set of routes is finite (it ranges over names declared in the bundle),
so the cache needs no eviction. Building a route looks only at rules whose
tool pattern could match (an index by exact tool name plus the wildcards).

The engine is pure apart from the injected clock and the budget state.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from palisade.bundle.canonical import bundle_digest
from palisade.bundle.globs import is_glob
from palisade.bundle.schema import Agent, Bundle, FailureMode, RatePer, Tool
from palisade.policy.budgets import BudgetState
from palisade.policy.compiled import (
    CompiledRule,
    Limit,
    Route,
    ServerEntry,
    labels_ok,
)
from palisade.policy.digests import approval_id, tool_definition_digest, tool_digest
from palisade.policy.types import Call, Clock, Decision, Risk, RuleTrace, Verdict, WouldBe

REGISTRY = "registry"
DEFAULT = "default"
FAILURE = "failure"
MUTATION_CAP = "budget/mutationsPerSession"
AGENT_MUTATION_CAP = "budget/mutationsPerAgent"


class Engine:
    """A bundle compiled for deciding. Build with :func:`compile_bundle`."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        revision: int = 0,
        digest: str | None = None,
        clock: Clock = time.monotonic,
        state: BudgetState | None = None,
    ) -> None:
        self.bundle = bundle
        self.revision = revision
        self.digest = digest if digest is not None else bundle_digest(bundle)
        self.failure_mode = bundle.failure_mode
        self.clock = clock
        self.state = state if state is not None else BudgetState()
        self._servers = {s.name: ServerEntry(s) for s in bundle.servers}
        self._agents = {a.id: a for a in bundle.agents}
        self._rules = tuple(CompiledRule(i, r) for i, r in enumerate(bundle.rules))
        # Index for building routes: rules by exact tool name, plus the rest.
        self._by_tool: dict[str, list[CompiledRule]] = {}
        self._any_tool: list[CompiledRule] = []
        for r in self._rules:
            tools = bundle.rules[r.index].match.tools
            if tools and not any(is_glob(t) for t in tools):
                for t in set(tools):
                    self._by_tool.setdefault(t, []).append(r)
            else:
                self._any_tool.append(r)
        b = bundle.budgets
        self._rates = tuple(
            Limit(x.id, x.match, per=x.per, rate=x.rate, burst=x.burst) for x in b.rate_limits
        )
        self._caps = tuple(
            Limit(x.id, x.match, limit=x.limit, window=x.window_seconds) for x in b.spend_caps
        )
        self._mutation_cap = b.mutations_per_session
        self._agent_mutations = b.mutations_per_agent
        self._default_reason = (
            f"no rule matched; the bundle's defaultDecision is {bundle.default_decision.value}"
        )
        self._identities: dict[tuple[str, str], Agent] = {}
        self._service_accounts: dict[str, Agent] = {}
        for a in bundle.agents:
            for ident in a.identities:
                if ident.service_account:
                    self._service_accounts[ident.service_account] = a
                else:
                    self._identities[(ident.issuer, ident.subject)] = a

    # -- lookups for adapters -------------------------------------------------

    def tool(self, server: str, tool: str) -> Tool | None:
        s = self._servers.get(server)
        entry = None if s is None else s.tools.get(tool)
        return None if entry is None else entry.tool

    def pin_problem(
        self,
        server: str,
        tool: str,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
        *,
        definition: Mapping[str, Any] | None = None,
    ) -> str:
        """Why a tool definition a server advertises breaks the registry's pin ("" if fine).

        For ``tools/list`` filtering: an unregistered tool, or a pinned tool whose
        definition changed, should be hidden and refused. ``definition`` is the whole
        advertised tool (:func:`~palisade.policy.digests.tool_digest`: annotations and
        every other field too); without it only name, description and input schema.
        """
        registered = self.tool(server, tool)
        if registered is None:
            return f"tool {tool!r} is not registered for server {server!r}"
        if not registered.pinned:
            return ""
        if definition is not None:
            actual = tool_digest({**definition, "name": tool})
        else:
            actual = tool_definition_digest(tool, description, input_schema)
        if actual != registered.pinned:
            return (
                f"tool {tool!r} of server {server!r} changed: its definition digest is {actual},"
                f" the registry pinned {registered.pinned}"
            )
        return ""

    def agent(self, agent_id: str) -> Agent | None:
        return self._agents.get(agent_id)

    def identify(
        self, *, issuer: str = "", subject: str = "", service_account: str = ""
    ) -> Agent | None:
        """The agent an authenticated identity maps to, per the bundle's ``identities``."""
        if service_account:
            return self._service_accounts.get(service_account)
        return self._identities.get((issuer, subject))

    # -- verdicts -------------------------------------------------------------

    def _verdict(
        self,
        decision: Decision,
        rule_id: str,
        reason: str,
        route: Route | None = None,
        *,
        approval: str = "",
        retry_after: float = 0.0,
        agent: Agent | None = None,
        risk: Risk | None = None,
        approvers: int = 1,
    ) -> Verdict:
        if route is not None:
            agent = route.agent
            risk = route.risk
        return Verdict(
            decision,
            rule_id,
            reason,
            self.revision,
            self.digest,
            agent.tenant if agent is not None else "",
            risk,
            approval,
            retry_after,
            approvers=approvers,
        )

    def _registry(self, reason: str, agent_id: str) -> Verdict:
        return self._verdict(Decision.DENY, REGISTRY, reason, agent=self._agents.get(agent_id))

    # -- routes -----------------------------------------------------------------

    def _route(self, server: ServerEntry, tool: Tool, agent: Agent, risk: Risk | None) -> Route:
        name = server.name
        candidates = sorted(
            (*self._by_tool.get(tool.name, ()), *self._any_tool), key=lambda r: r.index
        )
        route = Route(
            name,
            tool,
            agent,
            risk,
            rules=tuple(r for r in candidates if r.matcher.static(name, tool.name, agent, risk)),
            rates=tuple(x for x in self._rates if x.matcher.static(name, tool.name, agent, risk)),
            caps=(
                tuple(x for x in self._caps if x.matcher.static(name, tool.name, agent, risk))
                if tool.cost > 0
                else ()
            ),
            # Unknown risk counts as mutating: fail closed.
            mutating=(self._mutation_cap is not None or self._agent_mutations is not None)
            and (risk is None or risk.mutating),
        )
        # Rules after the first enforcing one without labels or `when` can never decide here.
        for i, r in enumerate(route.rules):
            if not r.audit and r.matcher.labels is None and r.program is None:
                route.rules = route.rules[: i + 1]
                break
        # Fast path: when the first candidate always decides (or there is none) and neither
        # budgets nor an approval id depend on the call, the verdict is fixed for the route.
        # A rule in audit mode before it is evaluated on each call: no fixed verdict.
        first = route.rules[0] if route.rules else None
        if first is not None and first.audit:
            pass
        elif first is None or (first.matcher.labels is None and first.program is None):
            decision = first.decision if first else self.bundle.default_decision
            budgeted = route.mutating or route.rates or route.caps
            if decision is not Decision.REQUIRE_APPROVAL and not (
                decision is Decision.ALLOW and budgeted
            ):
                route.fixed = self._verdict(
                    decision,
                    first.id if first else DEFAULT,
                    first.reason if first else self._default_reason,
                    route,
                    retry_after=(
                        first.retry_after if first and decision is Decision.THROTTLE else 0.0
                    ),
                )
        return route

    # -- deciding ------------------------------------------------------------------

    def decide(self, call: Call, *, dry_run: bool = False, explain: bool = False) -> Verdict:
        server = self._servers.get(call.server)
        if server is None:
            return self._registry(f"server {call.server!r} is not in the registry", call.agent)
        if not server.any_version and not server.version_ok(call.server_version):
            return self._registry(
                f"server {call.server!r} version {call.server_version or '(not reported)'!r}"
                " is not an approved version or image",
                call.agent,
            )
        entry = server.tools.get(call.tool)
        if entry is None:
            return self._registry(
                f"tool {call.tool!r} is not registered for server {call.server!r}", call.agent
            )
        tool = entry.tool
        risk = tool.risk
        if risk is not None:
            key: Any = call.agent
        else:
            risk = call.server_declared_risk
            key = (call.agent, risk)
        route = entry.routes.get(key)
        if route is None:
            agent = self._agents.get(call.agent)
            if agent is None:
                return self._registry(
                    f"agent {call.agent!r} is not declared in the bundle", call.agent
                )
            route = self._route(server, tool, agent, risk)
            entry.routes[key] = route
        fixed = route.fixed
        if fixed is not None and not explain:
            return fixed

        decided: CompiledRule | None = None
        would_be: list[WouldBe] = []
        for rule in route.rules:
            labels = rule.matcher.labels
            if labels is not None and not labels_ok(labels, call.labels):
                continue
            if rule.program is not None:
                try:
                    result = rule.program.execute(self._cel_context(call, route, rule))
                except Exception as exc:  # any CEL runtime error: failure mode decides
                    if rule.audit:  # what the failure mode would decide, recorded
                        would_be.append(self._would_fail(rule, _cel_problem(exc)))
                        continue
                    return self._failed(rule, _cel_problem(exc), route, call, explain)
                if result is not True:
                    if result is False:
                        continue
                    if rule.audit:
                        problem = f"'when' gave {type(result).__name__}, not a boolean"
                        would_be.append(self._would_fail(rule, problem))
                        continue
                    return self._failed(
                        rule,
                        f"'when' gave {type(result).__name__}, not a boolean",
                        route,
                        call,
                        explain,
                    )
            if rule.audit:
                would_be.append(WouldBe(rule.id, rule.decision, rule.reason))
                continue
            decided = rule
            break

        verdict = self._enforced(decided, route, call, dry_run, explain)
        if would_be:
            verdict = dataclasses.replace(verdict, would_be=tuple(would_be))
        return verdict

    def _would_fail(self, rule: CompiledRule, problem: str) -> WouldBe:
        decision = Decision.ALLOW if self.failure_mode is FailureMode.OPEN else Decision.DENY
        reason = f"the 'when' condition of rule {rule.id!r} could not be evaluated ({problem})"
        return WouldBe(rule.id, decision, reason)

    def _enforced(
        self,
        decided: CompiledRule | None,
        route: Route,
        call: Call,
        dry_run: bool,
        explain: bool,
    ) -> Verdict:
        """The verdict of the deciding rule (or the default), budgets applied."""
        verdict: Verdict | None
        if decided is None:
            decision = self.bundle.default_decision
            rule_key = DEFAULT
            verdict = route.verdicts.get(-1)
            if verdict is None:
                verdict = self._verdict(decision, DEFAULT, self._default_reason, route)
                route.verdicts[-1] = verdict
        elif decided.decision is Decision.REQUIRE_APPROVAL:
            decision = decided.decision
            rule_key = decided.id
            verdict = self._verdict(
                decision,
                decided.id,
                decided.reason,
                route,
                approval=approval_id(
                    call.agent, call.server, call.tool, call.arguments, call.session
                ),
                approvers=decided.approvers,
            )
        else:
            decision = decided.decision
            rule_key = decided.id
            verdict = route.verdicts.get(decided.index)
            if verdict is None:
                verdict = self._verdict(
                    decision,
                    decided.id,
                    decided.reason,
                    route,
                    retry_after=decided.retry_after if decision is Decision.THROTTLE else 0.0,
                )
                route.verdicts[decided.index] = verdict

        if decision is Decision.ALLOW and (route.mutating or route.rates or route.caps):
            budget_verdict = self._budgets(call, route, rule_key, dry_run)
            if budget_verdict is not None:
                if explain:
                    trace = self._explain(call, route)
                    step = RuleTrace(budget_verdict.rule_id, True, budget_verdict.reason)
                    return _with_trace(budget_verdict, (*trace, step))
                verdict = budget_verdict
        if explain:
            verdict = _with_trace(verdict, self._explain(call, route))
        return verdict

    def _cel_context(
        self, call: Call, route: Route, rule: CompiledRule | None = None
    ) -> dict[str, Any]:
        """The CEL variables ``rule`` uses (all of them when ``rule`` is None)."""
        args = call.arguments
        ctx: dict[str, Any] = {"args": args if isinstance(args, dict) else dict(args)}
        if rule is None or rule.needs_agent:
            ctx["agent"] = route.agent_view
        if rule is None or rule.needs_call:
            ctx["call"] = {
                "server": call.server,
                "tool": call.tool,
                "risk": route.risk.value if route.risk is not None else "",
                "session": call.session,
                "on_behalf_of": call.on_behalf_of,
                "labels": dict(call.labels),
            }
        return ctx

    def _failed(
        self, rule: CompiledRule, problem: str, route: Route, call: Call, explain: bool
    ) -> Verdict:
        if self.failure_mode is FailureMode.OPEN:
            decision = Decision.ALLOW
            tail = "failureMode is open, so the call is allowed"
        else:
            decision = Decision.DENY
            tail = "failureMode is closed, so the call is denied"
        verdict = self._verdict(
            decision,
            FAILURE,
            f"the 'when' condition of rule {rule.id!r} could not be evaluated ({problem}); {tail}",
            route,
        )
        if explain:
            verdict = _with_trace(verdict, self._explain(call, route))
        return verdict

    def _budgets(self, call: Call, route: Route, rule_key: str, dry_run: bool) -> Verdict | None:
        state = self.state
        now = self.clock()
        with state.lock:
            cap = self._mutation_cap
            if route.mutating and cap is not None:
                done = state.mutations(call.agent, call.session)
                if done >= cap:
                    return self._verdict(
                        Decision.REQUIRE_APPROVAL,
                        MUTATION_CAP,
                        f"this session has made {done} mutating calls, the most allowed without"
                        " a human's approval",
                        route,
                        approval=approval_id(
                            call.agent, call.server, call.tool, call.arguments, call.session
                        ),
                    )
            window = self._agent_mutations
            agent_key: tuple[Any, ...] | None = None
            if route.mutating and window is not None:
                agent_key = (AGENT_MUTATION_CAP, window.limit, window.window_seconds, call.agent)
                done = int(state.spent(agent_key, window.window_seconds, now))
                if done >= window.limit:
                    left = state.window_left(agent_key, window.window_seconds, now)
                    return self._verdict(
                        Decision.REQUIRE_APPROVAL,
                        AGENT_MUTATION_CAP,
                        f"agent {call.agent!r} has made {done} mutating calls in this"
                        f" {window.window_seconds:g}s window (all its sessions), the most allowed"
                        f" without a human's approval; the window resets in {left:.0f}s",
                        route,
                        approval=approval_id(
                            call.agent, call.server, call.tool, call.arguments, call.session
                        ),
                    )
            rate_keys: list[tuple[Any, ...]] = []
            worst = 0.0
            worst_limit: Limit | None = None
            for lim in route.rates:
                if lim.labels is not None and not labels_ok(lim.labels, call.labels):
                    continue
                if lim.per is RatePer.AGENT:
                    key: tuple[Any, ...] = (lim.id, lim.rate, lim.burst, "agent", call.agent)
                elif lim.per is RatePer.TOOL:
                    key = (lim.id, lim.rate, lim.burst, "tool", call.server, call.tool)
                else:
                    key = (lim.id, lim.rate, lim.burst, "rule", rule_key)
                wait = state.bucket_wait(key, lim.rate, lim.burst, now)
                if wait > worst:
                    worst, worst_limit = wait, lim
                rate_keys.append((key, lim.burst))
            if worst_limit is not None:
                return self._verdict(
                    Decision.THROTTLE,
                    f"budget/{worst_limit.id}",
                    f"rate limit {worst_limit.id!r} ({worst_limit.rate:g}/s, burst"
                    f" {worst_limit.burst:g}) exceeded; retry in {worst:.3g}s",
                    route,
                    retry_after=worst,
                )
            spend_keys: list[tuple[Any, ...]] = []
            cost = route.cost
            for lim in route.caps:
                if lim.labels is not None and not labels_ok(lim.labels, call.labels):
                    continue
                skey = (lim.id, lim.limit, lim.window, call.agent)
                spent = state.spent(skey, lim.window, now)
                if spent + cost > lim.limit:
                    left = state.window_left(skey, lim.window, now)
                    return self._verdict(
                        Decision.DENY,
                        f"budget/{lim.id}",
                        f"spend cap {lim.id!r} reached: {spent:g} of {lim.limit:g} cost units"
                        f" used in this {lim.window:g}s window, this call costs {cost:g};"
                        f" the window resets in {left:.0f}s",
                        route,
                    )
                spend_keys.append((skey, lim.window))
            if dry_run:
                return None
            if route.mutating:
                state.count_mutation(call.agent, call.session)
            if agent_key is not None and window is not None:
                state.spend(agent_key, 1.0, window.window_seconds, now)
            for key, burst in rate_keys:
                state.bucket_take(key, burst, now)
            for skey, window in spend_keys:
                state.spend(skey, cost, window, now)
        return None

    # -- explain ---------------------------------------------------------------------

    def _explain(self, call: Call, route: Route) -> tuple[RuleTrace, ...]:
        """Why each rule, in file order up to the one that decided, did or did not match."""
        traces: list[RuleTrace] = []
        agent = route.agent
        for rule in self._rules:
            m = rule.matcher
            src = self.bundle.rules[rule.index].match
            detail = ""
            if m.servers is not None and not m.servers(call.server):
                detail = f"server {call.server!r} does not match {list(src.servers)}"
            elif m.tools is not None and not m.tools(call.tool):
                detail = f"tool {call.tool!r} does not match {list(src.tools)}"
            elif m.risks is not None and (route.risk is None or route.risk not in m.risks):
                got = route.risk.value if route.risk else "unknown"
                detail = f"risk {got!r} is not in {[r.value for r in src.risk]}"
            elif m.agents is not None and not m.agents(agent.id):
                detail = f"agent {agent.id!r} does not match {list(src.agents)}"
            elif m.tenants is not None and not m.tenants(agent.tenant):
                detail = f"tenant {agent.tenant!r} does not match {list(src.tenants)}"
            elif m.labels is not None and not labels_ok(m.labels, call.labels):
                detail = f"labels {dict(call.labels)} do not match {dict(src.labels)}"
            elif rule.program is not None:
                try:
                    result = rule.program.execute(self._cel_context(call, route, rule))
                except Exception as exc:
                    traces.append(RuleTrace(rule.id, False, f"'when' failed: {_cel_problem(exc)}"))
                    if rule.audit:
                        continue
                    break
                if result is False:
                    traces.append(RuleTrace(rule.id, False, f"'when' is false: {rule.when}"))
                    continue
                if result is not True:
                    kind = type(result).__name__
                    traces.append(RuleTrace(rule.id, False, f"'when' gave a {kind}, not a boolean"))
                    if rule.audit:
                        continue
                    break
                traces.append(
                    RuleTrace(rule.id, True, _held(rule, f"match and 'when' hold: {rule.when}"))
                )
                if rule.audit:
                    continue
                break
            if detail:
                traces.append(RuleTrace(rule.id, False, detail))
                continue
            if rule.program is None:
                traces.append(RuleTrace(rule.id, True, _held(rule, "every match field holds")))
                if rule.audit:
                    continue
                break
        return tuple(traces)


def _held(rule: CompiledRule, detail: str) -> str:
    if not rule.audit:
        return detail
    return f"{detail}; mode audit: would {rule.decision.value}, recorded, not enforced"


def _cel_problem(exc: Exception) -> str:
    """What went wrong in a ``when``, without echoing values from the call (they may be secret)."""
    if isinstance(exc, KeyError):
        return "a field it reads is missing; guard it with has()"
    if isinstance(exc, TypeError):
        return "the values have types the expression cannot combine"
    return f"{type(exc).__name__} while evaluating"


def _with_trace(v: Verdict, trace: tuple[RuleTrace, ...]) -> Verdict:
    return Verdict(
        v.decision,
        v.rule_id,
        v.reason,
        v.bundle_revision,
        v.bundle_digest,
        v.tenant,
        v.risk,
        v.approval_id,
        v.retry_after_s,
        trace,
        v.approvers,
    )


def compile_bundle(
    bundle: Bundle,
    *,
    revision: int = 0,
    digest: str | None = None,
    clock: Clock = time.monotonic,
    state: BudgetState | None = None,
) -> Engine:
    """Compile ``bundle`` once for deciding (CEL compiled, rules indexed)."""
    return Engine(bundle, revision=revision, digest=digest, clock=clock, state=state)
