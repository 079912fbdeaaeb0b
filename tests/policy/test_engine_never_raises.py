"""For any well-formed call (any JSON arguments, labels, ids) the engine answers, never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.policy import Call, Decision, Risk
from palisade.policy.engine import compile_bundle
from tests.policy.kit import FakeClock, bundle

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)

ENGINE = compile_bundle(
    bundle("""\
        rules:
          - {id: ns, decision: allow, when: "args.namespace in agent.namespaces"}
          - {id: size, decision: require_approval, when: "size(args.items) > 2"}
          - id: lab
            decision: throttle
            match: {labels: {env: "p*"}}
            when: "call.labels.env == 'prod'"
          - {id: num, decision: deny, when: "args.n > 3"}
        budgets:
          rateLimits: [{id: rl, rate: 1, burst: 3}]
          spendCaps: [{id: sc, limit: 10, windowSeconds: 60}]
          mutationsPerSession: 2
        """),
    clock=FakeClock(),
)


@settings(max_examples=300, deadline=None)
@given(
    arguments=st.dictionaries(
        st.sampled_from(["namespace", "items", "n", "other"]), json_values, max_size=4
    ),
    agent=st.sampled_from(["sre", "other", "", "x" * 300]),
    tool=st.sampled_from(["pods_log", "apply", "mystery", ""]),
    labels=st.dictionaries(st.sampled_from(["env", "x"]), st.text(max_size=5), max_size=2),
    session=st.text(max_size=5),
    declared=st.sampled_from([None, *Risk]),
    dry_run=st.booleans(),
    explain=st.booleans(),
)
def test_the_engine_always_answers(
    arguments: dict[str, Any],
    agent: str,
    tool: str,
    labels: dict[str, str],
    session: str,
    declared: Risk | None,
    dry_run: bool,
    explain: bool,
) -> None:
    call = Call(
        agent=agent,
        server="k8s",
        tool=tool,
        arguments=arguments,
        session=session,
        labels=labels,
        server_declared_risk=declared,
    )
    v = ENGINE.decide(call, dry_run=dry_run, explain=explain)
    assert isinstance(v.decision, Decision) and v.rule_id and v.reason
