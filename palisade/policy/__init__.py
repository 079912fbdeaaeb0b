"""The decision engine: compiled bundles deciding tool calls (pure, no I/O).

Public surface::

    from palisade.policy import Call, Decision, Risk, Verdict     # plain data
    from palisade.policy import compile_bundle, Engine, Guard     # deciding
    from palisade.policy import BudgetState, reference_decide     # state, oracle

The engine modules are imported lazily so that ``palisade.bundle`` (which uses
the plain types here) and ``palisade.policy`` can import each other's parts
without a cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from palisade.policy.types import Call, Clock, Decision, DecisionEngine, Risk, RuleTrace, Verdict

if TYPE_CHECKING:
    from palisade.policy.budgets import BudgetState
    from palisade.policy.engine import Engine, compile_bundle
    from palisade.policy.guard import Guard
    from palisade.policy.reference import reference_decide

_LAZY = {
    "BudgetState": "palisade.policy.budgets",
    "Engine": "palisade.policy.engine",
    "compile_bundle": "palisade.policy.engine",
    "Guard": "palisade.policy.guard",
    "reference_decide": "palisade.policy.reference",
}

__all__ = [
    "BudgetState",
    "Call",
    "Clock",
    "Decision",
    "DecisionEngine",
    "Engine",
    "Guard",
    "Risk",
    "RuleTrace",
    "Verdict",
    "compile_bundle",
    "reference_decide",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
