"""Running the tests written inside a bundle (``spec.tests``).

Each call test gets a fresh engine with its own budget state and a fake clock
that starts at 0 and advances ``everySeconds`` between repetitions; the last
repetition's verdict is compared with ``expect``. A GPU test checks a tenant's
usage against its ``gpuQuota`` (:func:`palisade.policy.quota.quota_violations`).
Pure: no files, no output.
"""

from __future__ import annotations

from dataclasses import dataclass

from palisade.bundle.schema import Bundle, BundleTest
from palisade.policy.budgets import BudgetState
from palisade.policy.engine import Engine
from palisade.policy.quota import quota_violations
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
    passed: bool
    problem: str
    #: The engine's answer (call tests), or None (GPU tests).
    verdict: Verdict | None = None
    #: The quota limits exceeded (GPU tests).
    violations: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        if self.verdict is not None:
            return self.verdict.decision.value
        return "over: " + ", ".join(self.violations) if self.violations else "within quota"

    @property
    def rule(self) -> str:
        return self.verdict.rule_id if self.verdict is not None else "gpuQuota"


def to_call(test: BundleTest) -> Call:
    c = test.call
    if c is None:
        raise ValueError(f"test {test.name!r} is not a call test")
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


def _gpu_test(bundle: Bundle, test: BundleTest) -> TestResult:
    usage = test.gpu
    tenant = bundle.tenant(usage.tenant) if usage is not None else None
    if usage is None or tenant is None or tenant.gpu_quota is None:
        return TestResult(test, False, "no such tenant with a gpuQuota")
    got = quota_violations(tenant.gpu_quota, usage)
    want = test.expect.violations or ()
    if got == want:
        return TestResult(test, True, "", violations=got)
    problem = f"expected violations {list(want)}, got {list(got)}"
    return TestResult(test, False, problem, violations=got)


def run_test(bundle: Bundle, test: BundleTest, digest: str = "") -> TestResult:
    if test.gpu is not None:
        return _gpu_test(bundle, test)
    clock = FakeClock()
    engine = Engine(bundle, digest=digest, clock=clock, state=BudgetState())
    call = to_call(test)
    verdict = engine.decide(call)
    for _ in range(test.repeat - 1):
        clock.advance(test.every_seconds)
        verdict = engine.decide(call)
    problems: list[str] = []
    exp = test.expect
    if exp.decision is not None and verdict.decision is not exp.decision:
        problems.append(f"expected {exp.decision.value}, got {verdict.decision.value}")
    if exp.rule and verdict.rule_id != exp.rule:
        problems.append(f"expected rule {exp.rule!r}, got {verdict.rule_id!r}")
    if exp.reason_contains and exp.reason_contains not in verdict.reason:
        problems.append(f"reason {verdict.reason!r} lacks {exp.reason_contains!r}")
    return TestResult(test, not problems, "; ".join(problems), verdict=verdict)


def run_tests(bundle: Bundle) -> list[TestResult]:
    """Run every test of ``bundle`` in order."""
    from palisade.bundle.canonical import bundle_digest

    digest = bundle_digest(bundle)
    return [run_test(bundle, t, digest) for t in bundle.tests]
