"""Running the tests written inside a bundle (``spec.tests``).

Each test gets a fresh engine with its own budget state and a fake clock that
starts at 0 and advances ``everySeconds`` between repetitions; the last
repetition's verdict is compared with ``expect``. Pure: no files, no output.
"""

from __future__ import annotations

from dataclasses import dataclass

from palisade.bundle.schema import Bundle, BundleTest
from palisade.policy.budgets import BudgetState
from palisade.policy.engine import Engine
from palisade.policy.types import Call, Verdict


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest class

    test: BundleTest
    verdict: Verdict
    passed: bool
    problem: str


def to_call(test: BundleTest) -> Call:
    c = test.call
    return Call(
        agent=c.agent,
        server=c.server,
        tool=c.tool,
        arguments=dict(c.arguments),
        session=c.session,
        on_behalf_of=c.on_behalf_of,
        server_version=c.server_version,
        labels=dict(c.labels),
        server_declared_risk=c.server_declared_risk,
    )


def run_test(bundle: Bundle, test: BundleTest, digest: str = "") -> TestResult:
    clock = FakeClock()
    engine = Engine(bundle, digest=digest, clock=clock, state=BudgetState())
    call = to_call(test)
    verdict = engine.decide(call)
    for _ in range(test.repeat - 1):
        clock.advance(test.every_seconds)
        verdict = engine.decide(call)
    problems: list[str] = []
    exp = test.expect
    if verdict.decision is not exp.decision:
        problems.append(f"expected {exp.decision.value}, got {verdict.decision.value}")
    if exp.rule and verdict.rule_id != exp.rule:
        problems.append(f"expected rule {exp.rule!r}, got {verdict.rule_id!r}")
    if exp.reason_contains and exp.reason_contains not in verdict.reason:
        problems.append(f"reason {verdict.reason!r} lacks {exp.reason_contains!r}")
    return TestResult(test, verdict, not problems, "; ".join(problems))


def run_tests(bundle: Bundle) -> list[TestResult]:
    """Run every test of ``bundle`` in order."""
    from palisade.bundle.canonical import bundle_digest

    digest = bundle_digest(bundle)
    return [run_test(bundle, t, digest) for t in bundle.tests]
