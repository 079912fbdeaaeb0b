"""The fail-closed front of the engine: what every adapter actually calls.

A :class:`Guard` holds the active compiled engine and swaps it atomically (one
attribute assignment; a decision in flight finishes on the engine it started
with). It never raises for a well-formed call:

- no bundle active -> DENY (rule ``failure``), always, whatever any bundle says;
- the engine raised -> the active bundle's ``failureMode`` (DENY unless ``open``);
- the decision took longer than ``time_budget_s`` -> the same, even if the
  engine had allowed it (a slow engine is a broken engine).

The guard keeps one :class:`BudgetState` across swaps so a new revision does
not reset agents' budgets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from palisade.bundle.schema import Bundle, FailureMode
from palisade.policy.budgets import BudgetState
from palisade.policy.engine import FAILURE, Engine, compile_bundle
from palisade.policy.types import Call, Clock, Decision, Verdict

log = logging.getLogger(__name__)

NO_BUNDLE_REASON = "no policy bundle is active; every call is denied until one is loaded"
DEFAULT_TIME_BUDGET_S = 0.050


class Guard:
    """Holds the active engine; decides fail-closed. Satisfies ``DecisionEngine``."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        time_budget_s: float = DEFAULT_TIME_BUDGET_S,
        timer: Callable[[], float] = time.perf_counter,
        clock: Clock = time.monotonic,
        state: BudgetState | None = None,
    ) -> None:
        self._engine = engine
        self.time_budget_s = time_budget_s
        self._timer = timer
        self.clock = clock
        self.state = state if state is not None else (engine.state if engine else BudgetState())

    @property
    def engine(self) -> Engine | None:
        return self._engine

    @property
    def revision(self) -> int:
        return self._engine.revision if self._engine else 0

    def activate(self, engine: Engine) -> None:
        """Make ``engine`` the active one (atomic; calls in flight finish on the old one)."""
        self._engine = engine
        log.info(
            "policy bundle activated",
            extra={
                "bundle": engine.bundle.name,
                "revision": engine.revision,
                "digest": engine.digest,
            },
        )

    def load(self, bundle: Bundle, *, revision: int = 0, digest: str | None = None) -> Engine:
        """Compile ``bundle`` with this guard's clock and budget state, then activate it.

        If compiling fails the exception propagates and the previous engine stays active.
        """
        engine = compile_bundle(
            bundle, revision=revision, digest=digest, clock=self.clock, state=self.state
        )
        self.activate(engine)
        return engine

    def clear(self) -> None:
        self._engine = None

    def decide(self, call: Call, *, dry_run: bool = False, explain: bool = False) -> Verdict:
        engine = self._engine
        if engine is None:
            return Verdict(Decision.DENY, FAILURE, NO_BUNDLE_REASON, 0)
        start = self._timer()
        try:
            verdict = engine.decide(call, dry_run=dry_run, explain=explain)
        except Exception as exc:
            log.exception(
                "policy evaluation failed",
                extra={"agent": call.agent, "server": call.server, "tool": call.tool},
            )
            return _failure(engine, f"policy evaluation failed ({type(exc).__name__})")
        elapsed = self._timer() - start
        if elapsed > self.time_budget_s:
            return _failure(
                engine,
                f"policy evaluation took {elapsed * 1000:.1f} ms, over the"
                f" {self.time_budget_s * 1000:.1f} ms budget",
            )
        return verdict


def _failure(engine: Engine, problem: str) -> Verdict:
    if engine.failure_mode is FailureMode.OPEN:
        decision, tail = Decision.ALLOW, "failureMode is open, so the call is allowed"
    else:
        decision, tail = Decision.DENY, "failureMode is closed, so the call is denied"
    return Verdict(decision, FAILURE, f"{problem}; {tail}", engine.revision, engine.digest)
