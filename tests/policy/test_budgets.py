"""Rate limits, spend caps and the mutation cap, driven by a fake clock."""

from __future__ import annotations

import pytest

from palisade.policy import Decision
from palisade.policy.budgets import BudgetState
from palisade.policy.digests import approval_id
from palisade.policy.engine import compile_bundle
from palisade.policy.guard import Guard
from tests.policy.kit import FakeClock, bundle, call

ALLOW_ALL = """\
rules:
  - {id: allow-all, decision: allow}
"""


def engine_with(budgets: str, clock: FakeClock, rules: str = ALLOW_ALL):  # type: ignore[no-untyped-def]
    return compile_bundle(bundle(rules + budgets), clock=clock)


def test_rate_limit_per_agent_throttles_past_the_burst_and_refills() -> None:
    clock = FakeClock()
    engine = engine_with("budgets:\n  rateLimits:\n    - {id: rl, rate: 2, burst: 3}\n", clock)
    for _ in range(3):
        assert engine.decide(call()).allowed
    v = engine.decide(call())
    assert (v.decision, v.rule_id) == (Decision.THROTTLE, "budget/rl")
    assert v.retry_after_s == pytest.approx(0.5)
    assert "rate limit 'rl'" in v.reason
    # The other agent has its own bucket.
    assert engine.decide(call(agent="other")).allowed
    clock.advance(0.5)
    assert engine.decide(call()).allowed
    assert not engine.decide(call()).allowed
    clock.advance(10)  # refill is capped at the burst
    assert [engine.decide(call()).allowed for _ in range(4)] == [True, True, True, False]


def test_rate_limit_per_tool_is_shared_by_agents_but_not_by_tools() -> None:
    clock = FakeClock()
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: rl, per: tool, rate: 1, burst: 1}\n", clock
    )
    assert engine.decide(call("pods_log")).allowed
    assert engine.decide(call("pods_log", agent="other")).decision is Decision.THROTTLE
    assert engine.decide(call("pods_list")).allowed


def test_rate_limit_per_rule_counts_calls_decided_by_that_rule() -> None:
    clock = FakeClock()
    rules = """\
rules:
  - {id: logs, decision: allow, match: {tools: [pods_log]}}
  - {id: rest, decision: allow}
"""
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: rl, per: rule, rate: 1, burst: 2}\n", clock, rules
    )
    assert engine.decide(call("pods_log")).allowed
    assert engine.decide(call("pods_log", agent="other")).allowed
    assert engine.decide(call("pods_log")).decision is Decision.THROTTLE
    assert engine.decide(call("pods_list")).allowed


def test_rate_limit_with_a_match_applies_only_to_matching_calls() -> None:
    clock = FakeClock()
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: writes, rate: 1, burst: 1, match: {risk: [write]}}\n",
        clock,
    )
    assert engine.decide(call("apply")).allowed
    assert engine.decide(call("apply")).decision is Decision.THROTTLE
    assert all(engine.decide(call("pods_log")).allowed for _ in range(5))


def test_spend_cap_denies_past_the_limit_until_the_window_resets() -> None:
    clock = FakeClock()
    engine = engine_with(
        "budgets:\n  spendCaps:\n    - {id: cap, limit: 12, windowSeconds: 60}\n", clock
    )
    assert engine.decide(call("apply")).allowed  # cost 5
    assert engine.decide(call("apply")).allowed  # 10
    v = engine.decide(call("apply"))  # 15 > 12
    assert (v.decision, v.rule_id) == (Decision.DENY, "budget/cap")
    assert "10 of 12 cost units" in v.reason and "resets in 60s" in v.reason
    assert engine.decide(call("pods_log")).allowed  # cost 1 still fits: 11
    assert engine.decide(call("pods_list")).allowed  # cost 0 is never capped
    clock.advance(60)
    assert engine.decide(call("apply")).allowed


def test_mutation_cap_requires_approval_from_the_sixth_mutating_call_of_a_session() -> None:
    clock = FakeClock()
    engine = engine_with("budgets:\n  mutationsPerSession: 5\n", clock)
    for i in range(5):
        assert engine.decide(call("apply", arguments={"i": i})).allowed
        assert engine.decide(call("pods_log")).allowed  # reads do not count
    v = engine.decide(call("apply", arguments={"i": 5}))
    assert (v.decision, v.rule_id) == (Decision.REQUIRE_APPROVAL, "budget/mutationsPerSession")
    assert v.approval_id == approval_id("sre", "k8s", "apply", {"i": 5}, "s1")
    assert "5 mutating calls" in v.reason
    # Still capped (a refused call is not counted), and a new session starts afresh.
    assert engine.decide(call("delete")).decision is Decision.REQUIRE_APPROVAL
    assert engine.decide(call("apply", session="s2")).allowed


def test_unknown_risk_counts_as_mutating() -> None:
    engine = engine_with("budgets:\n  mutationsPerSession: 1\n", FakeClock())
    assert engine.decide(call("mystery")).allowed
    assert engine.decide(call("mystery")).decision is Decision.REQUIRE_APPROVAL


def test_a_refused_call_consumes_no_budget() -> None:
    clock = FakeClock()
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 2}\n"
        "  spendCaps:\n    - {id: cap, limit: 5, windowSeconds: 60}\n",
        clock,
    )
    assert engine.decide(call("apply")).allowed  # spend 5, 1 token left
    assert engine.decide(call("apply")).decision is Decision.DENY  # over the cap: no token taken
    assert engine.decide(call("pods_list")).allowed  # the last token is still there
    assert engine.decide(call("pods_list")).decision is Decision.THROTTLE


def test_dry_run_checks_budgets_without_consuming_them() -> None:
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 1}\n  mutationsPerSession: 1\n",
        FakeClock(),
    )
    for _ in range(3):
        assert engine.decide(call("apply"), dry_run=True).allowed
    assert engine.decide(call("apply")).allowed
    assert engine.decide(call("apply"), dry_run=True).decision is Decision.REQUIRE_APPROVAL


def test_budgets_apply_only_to_allowed_calls() -> None:
    rules = "rules:\n  - {id: refuse, decision: deny}\n"
    engine = engine_with(
        "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 1}\n", FakeClock(), rules
    )
    for _ in range(3):
        assert engine.decide(call()).rule_id == "refuse"


def test_budget_state_survives_a_new_revision_in_the_guard() -> None:
    clock = FakeClock()
    guard = Guard(clock=clock)
    b = bundle(ALLOW_ALL + "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 2}\n")
    guard.load(b, revision=1)
    assert guard.decide(call()).allowed and guard.decide(call()).allowed
    guard.load(b, revision=2)
    v = guard.decide(call())
    assert (v.decision, v.bundle_revision) == (Decision.THROTTLE, 2)


def test_changing_a_limit_starts_it_afresh() -> None:
    clock = FakeClock()
    guard = Guard(clock=clock)
    guard.load(bundle(ALLOW_ALL + "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 1}\n"))
    assert guard.decide(call()).allowed and not guard.decide(call()).allowed
    guard.load(bundle(ALLOW_ALL + "budgets:\n  rateLimits:\n    - {id: rl, rate: 1, burst: 5}\n"))
    assert guard.decide(call()).allowed


def test_budget_tables_are_bounded() -> None:
    state = BudgetState(max_entries=10)
    engine = compile_bundle(
        bundle(ALLOW_ALL + "budgets:\n  mutationsPerSession: 3\n"), clock=FakeClock(), state=state
    )
    for i in range(100):
        engine.decide(call("apply", session=f"s{i}"))
    assert len(state._sessions) <= 10


def test_explain_shows_the_budget_that_overrode_the_rule() -> None:
    engine = engine_with("budgets:\n  mutationsPerSession: 0\n", FakeClock())
    v = engine.decide(call("apply"), explain=True)
    assert [(t.rule_id, t.matched) for t in v.explanation] == [
        ("allow-all", True),
        ("budget/mutationsPerSession", True),
    ]
