"""Property: the compiled engine decides exactly as the naive reference evaluator does.

Bundles and calls are random (hypothesis): exact names and globs, risk filters,
labels, CEL conditions that hold, fail, error or return non-booleans, unknown
servers, tools, agents and versions, server-declared risk, both default
decisions and both failure modes, the mutation cap over a session and the one per
agent across its sessions.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from palisade.bundle import Bundle, from_document
from palisade.policy import Call, Decision, Risk
from palisade.policy.engine import compile_bundle
from palisade.policy.reference import reference_decide
from tests.policy.kit import FakeClock

TOOLS = ["pods_log", "pods_list", "apply", "delete", "helm_install"]
AGENTS = {"sre-1": "pay", "sre-2": "pay", "bot": "search"}
RISKS = ["read", "write", "destructive", "admin"]

TOOL_PATTERNS = ["pods_*", "*_list", "*", "apply", "delete", "helm_install", "pods_log", "?pply"]
TOOL_PATTERNS += ["[ad]*"]
AGENT_PATTERNS = ["sre-1", "sre-2", "bot", "sre-*", "*"]
TENANT_PATTERNS = ["pay", "search", "*", "p*"]
SERVER_PATTERNS = ["k8s", "git", "*", "k*"]
WHENS = [
    "",
    "",
    "has(args.ns) && args.ns == 'pay'",
    "args.ns == 'pay'",
    "size(args) > 1",
    "call.risk == 'write'",
    "agent.tenant == 'pay' && 'k8s:write' in agent.scopes",
    "'env' in call.labels",
    "has(args.n) ? args.n + 1 : false",
    "args.ns in agent.namespaces",
]


def sub(pool: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)


match_st = st.fixed_dictionaries(
    {},
    optional={
        "servers": sub(SERVER_PATTERNS),
        "tools": sub(TOOL_PATTERNS),
        "risk": sub(RISKS),
        "agents": sub(AGENT_PATTERNS),
        "tenants": sub(TENANT_PATTERNS),
        "labels": st.dictionaries(
            st.sampled_from(["env", "team"]), st.sampled_from(["prod", "p*", "dev"]), max_size=2
        ),
    },
)

rule_st = st.tuples(st.sampled_from([d.value for d in Decision]), match_st, st.sampled_from(WHENS))

# Every server registers every tool (rules may not name unregistered tools); calls
# still reach the registry's "unknown tool" path through a name no server has.
server_st = st.tuples(
    st.tuples(*(st.sampled_from([None, *RISKS]) for _ in TOOLS)).map(
        lambda risks: list(zip(TOOLS, risks, strict=True))
    ),
    st.sampled_from([[], ["1.*"], ["*"]]),
)


@st.composite
def bundles(draw: st.DrawFn) -> Bundle:
    servers = []
    for name in ("k8s", "git"):
        tools, versions = draw(server_st)
        servers.append(
            {
                "name": name,
                "versions": versions,
                "tools": [{"name": t, **({"risk": r} if r else {})} for t, r in tools],
            }
        )
    rules = draw(st.lists(rule_st, max_size=25))
    spec: dict[str, Any] = {
        "defaultDecision": draw(st.sampled_from(["allow", "deny"])),
        "failureMode": draw(st.sampled_from(["open", "closed"])),
        "servers": servers,
        "tenants": [{"name": "pay"}, {"name": "search"}],
        "agents": [
            {"id": a, "tenant": t, "namespaces": [t], "scopes": ["k8s:write"] if t == "pay" else []}
            for a, t in AGENTS.items()
        ],
        "rules": [
            {"id": f"r{i}", "decision": d, "when": w, **({"match": m} if m else {})}
            for i, (d, m, w) in enumerate(rules)
        ],
    }
    budgets: dict[str, Any] = {}
    cap = draw(st.sampled_from([None, 0, 1, 3]))
    if cap is not None:
        budgets["mutationsPerSession"] = cap
    per_agent = draw(st.sampled_from([None, 0, 2, 4]))
    if per_agent is not None:
        # A window longer than any test: the fake clock does not move within one.
        budgets["mutationsPerAgent"] = {"limit": per_agent, "windowSeconds": 3600}
    if budgets:
        spec["budgets"] = budgets
    doc = {
        "apiVersion": "palisade.dev/v1alpha1",
        "kind": "PolicyBundle",
        "metadata": {"name": "prop"},
        "spec": spec,
    }
    return from_document(doc)


call_st = st.builds(
    Call,
    agent=st.sampled_from([*AGENTS, "stranger"]),
    server=st.sampled_from(["k8s", "git", "k8s", "nowhere"]),
    tool=st.sampled_from([*TOOLS, "unknown_tool"]),
    arguments=st.fixed_dictionaries(
        {},
        optional={
            "ns": st.sampled_from(["pay", "search", "kube-system"]),
            "n": st.integers(-3, 3),
        },
    ),
    session=st.sampled_from(["s1", "s2"]),
    server_version=st.sampled_from(["1.2.0", "2.0.0", ""]),
    labels=st.dictionaries(st.sampled_from(["env", "team"]), st.sampled_from(["prod", "dev"])),
    server_declared_risk=st.sampled_from([None, *Risk]),
)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(bundle=bundles(), call=call_st)
def test_one_call_is_decided_as_the_reference_decides_it(bundle: Bundle, call: Call) -> None:
    engine = compile_bundle(bundle, clock=FakeClock())
    v = engine.decide(call)
    assert (v.decision, v.rule_id) == reference_decide(bundle, call)
    # explain changes nothing but the trace, and the trace ends at the deciding rule.
    e = compile_bundle(bundle, clock=FakeClock()).decide(call, explain=True)
    assert (e.decision, e.rule_id) == (v.decision, v.rule_id)
    if v.rule_id in {r.id for r in bundle.rules}:
        assert e.explanation[-1].rule_id == v.rule_id and e.explanation[-1].matched
        assert all(not t.matched for t in e.explanation[:-1])


@SETTINGS
@given(bundle=bundles(), calls=st.lists(call_st, min_size=1, max_size=12))
def test_a_session_of_calls_is_decided_as_the_reference_decides_it(
    bundle: Bundle, calls: list[Call]
) -> None:
    engine = compile_bundle(bundle, clock=FakeClock())
    counted: dict[tuple[str, str], int] = {}
    per_agent: dict[str, int] = {}
    for call in calls:
        key = (call.agent, call.session)
        expected = reference_decide(bundle, call, counted.get(key, 0), per_agent.get(call.agent, 0))
        v = engine.decide(call)
        assert (v.decision, v.rule_id) == expected
        server = bundle.server(call.server)
        tool = server.tool(call.tool) if server else None
        risk = (tool.risk if tool and tool.risk else None) or call.server_declared_risk
        # Budgets count allowed mutating calls; a fail-open allow skips budgets entirely.
        allowed = expected[0] is Decision.ALLOW and expected[1] != "failure"
        if allowed and (risk is None or risk is not Risk.READ):
            counted[key] = counted.get(key, 0) + 1
            per_agent[call.agent] = per_agent.get(call.agent, 0) + 1


@settings(max_examples=60, deadline=None)
@given(bundle=bundles(), call=call_st)
def test_dry_run_decides_the_same_and_leaves_no_trace_in_the_budgets(
    bundle: Bundle, call: Call
) -> None:
    engine = compile_bundle(bundle, clock=FakeClock())
    first = engine.decide(call, dry_run=True)
    again = engine.decide(call, dry_run=True)
    assert (first.decision, first.rule_id) == (again.decision, again.rule_id)
    assert (first.decision, first.rule_id) == reference_decide(bundle, call)
