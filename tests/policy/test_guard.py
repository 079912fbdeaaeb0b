"""The guard fails closed: no bundle, an exception or a slow evaluation all deny (unless open)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from palisade.policy import Decision, DecisionEngine
from palisade.policy.guard import NO_BUNDLE_REASON, Guard
from tests.policy.kit import bundle, call

ALLOW = "rules:\n  - {id: allow-all, decision: allow}\n"


def broken_clock() -> float:
    raise RuntimeError("clock source vanished")


def stepping_timer(step: float) -> Iterator[float]:
    t = 0.0
    while True:
        yield t
        t += step


def test_the_guard_satisfies_the_engine_protocol() -> None:
    guard: DecisionEngine = Guard()
    assert guard.decide(call()).decision is Decision.DENY


def test_no_bundle_denies_every_call_with_a_clear_reason() -> None:
    v = Guard().decide(call())
    assert (v.decision, v.rule_id, v.reason, v.bundle_revision) == (
        Decision.DENY,
        "failure",
        NO_BUNDLE_REASON,
        0,
    )


def test_an_exception_inside_evaluation_denies_under_failure_mode_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guard(clock=broken_clock)
    guard.load(bundle(ALLOW + "budgets:\n  mutationsPerSession: 3\n"), revision=5)
    v = guard.decide(call("apply", arguments={"password": "hunter2"}))
    assert (v.decision, v.rule_id, v.bundle_revision) == (Decision.DENY, "failure", 5)
    assert "policy evaluation failed (RuntimeError)" in v.reason
    assert "hunter2" not in caplog.text and "hunter2" not in v.reason


def test_an_exception_inside_evaluation_allows_only_when_the_bundle_says_open() -> None:
    guard = Guard(clock=broken_clock)
    guard.load(bundle("failureMode: open\n" + ALLOW + "budgets:\n  mutationsPerSession: 3\n"))
    v = guard.decide(call("apply"))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "failure")
    assert "failureMode is open" in v.reason


def test_an_evaluation_over_the_time_budget_is_denied_even_if_allowed() -> None:
    ticks = stepping_timer(0.2)
    guard = Guard(time_budget_s=0.05, timer=lambda: next(ticks))
    guard.load(bundle(ALLOW))
    v = guard.decide(call())
    assert (v.decision, v.rule_id) == (Decision.DENY, "failure")
    assert "took 200.0 ms, over the 50.0 ms budget" in v.reason


def test_activation_swaps_atomically_and_a_failed_load_keeps_the_last_good_engine() -> None:
    guard = Guard()
    guard.load(bundle(ALLOW), revision=1)
    assert guard.decide(call()).bundle_revision == 1
    deny = bundle("rules:\n  - {id: deny-all, decision: deny}\n")
    guard.load(deny, revision=2)
    v = guard.decide(call())
    assert (v.decision, v.rule_id, v.bundle_revision) == (Decision.DENY, "deny-all", 2)
    # A bundle the engine cannot compile (built by hand, never validated) leaves rev 2 active.
    bad = deny.__class__(
        name="bad", rules=(deny.rules[0].__class__(id="x", decision=Decision.ALLOW, when="(("),)
    )
    with pytest.raises(ValueError):
        guard.load(bad, revision=3)
    assert guard.revision == 2 and guard.decide(call()).rule_id == "deny-all"


def test_clearing_the_guard_returns_to_deny_everything() -> None:
    guard = Guard()
    guard.load(bundle(ALLOW))
    guard.clear()
    assert guard.decide(call()).reason == NO_BUNDLE_REASON


def test_concurrent_decisions_during_swaps_always_see_a_whole_engine() -> None:
    # A generous time budget: this is about atomicity, and threads wait on the GIL.
    guard = Guard(time_budget_s=60)
    a = bundle(ALLOW)
    b = bundle("rules:\n  - {id: deny-all, decision: deny}\n")
    guard.load(a, revision=1)
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def decide() -> None:
        while not stop.is_set():
            v = guard.decide(call("pods_list"))
            seen.append((v.bundle_revision, v.rule_id))

    threads = [threading.Thread(target=decide) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(200):
        guard.load(a if i % 2 else b, revision=2 + i)
    stop.set()
    for t in threads:
        t.join()
    for revision, rule in seen:
        expected = "allow-all" if revision == 1 or revision % 2 == 1 else "deny-all"
        assert rule == expected, (revision, rule)
