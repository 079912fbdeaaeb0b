"""Property: rate limits behave as GCRA, an independent formulation of the token bucket.

GCRA keeps one "theoretical arrival time" instead of a token count; a call at
``t`` passes iff ``max(TAT, t) + T - t <= burst * T`` with ``T = 1 / rate``. The
two agree exactly on every sequence; times and rates are binary fractions so
floating point cannot blur a boundary. Spend caps are checked against a plain
fixed-window model.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.policy import Decision
from palisade.policy.engine import compile_bundle
from tests.policy.kit import FakeClock, bundle, call


class Gcra:
    def __init__(self, rate: float, burst: int) -> None:
        self.t = 1.0 / rate
        self.limit = burst * self.t
        self.tat = float("-inf")

    def allow(self, now: float) -> bool:
        new_tat = max(self.tat, now) + self.t
        if new_tat - now <= self.limit:
            self.tat = new_tat
            return True
        return False


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    burst=st.integers(1, 5),
    gaps=st.lists(st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0, 3.0]), min_size=1, max_size=40),
)
def test_rate_limit_decisions_equal_gcra(rate: float, burst: int, gaps: list[float]) -> None:
    clock = FakeClock()
    engine = compile_bundle(
        bundle(
            "rules:\n  - {id: all, decision: allow}\n"
            f"budgets:\n  rateLimits:\n    - {{id: rl, rate: {rate}, burst: {burst}}}\n"
        ),
        clock=clock,
    )
    model = Gcra(rate, burst)
    for gap in gaps:
        clock.advance(gap)
        v = engine.decide(call("pods_list"))
        expected = model.allow(clock.now)
        assert v.allowed == expected, (clock.now, v)
        if not expected:
            assert v.decision is Decision.THROTTLE and v.retry_after_s > 0


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(0, 30),
    window=st.sampled_from([1.0, 4.0, 16.0]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["apply", "pods_log", "pods_list"]),
            st.sampled_from([0.0, 0.5, 2.0, 8.0]),
        ),
        min_size=1,
        max_size=40,
    ),
)
def test_spend_cap_decisions_equal_a_fixed_window_model(
    limit: int, window: float, steps: list[tuple[str, float]]
) -> None:
    costs = {"apply": 5, "pods_log": 1, "pods_list": 0}
    clock = FakeClock()
    engine = compile_bundle(
        bundle(
            "rules:\n  - {id: all, decision: allow}\n"
            f"budgets:\n  spendCaps:\n    - {{id: sc, limit: {limit}, windowSeconds: {window}}}\n"
        ),
        clock=clock,
    )
    start: float | None = None
    spent = 0
    for tool, gap in steps:
        clock.advance(gap)
        now, cost = clock.now, costs[tool]
        if cost == 0:
            expected = True
        else:
            if start is not None and now - start >= window:
                start, spent = None, 0
            expected = spent + cost <= limit
            if expected:
                if start is None:
                    start = now
                spent += cost
        v = engine.decide(call(tool))
        assert v.allowed == expected, (now, tool, spent, v)
