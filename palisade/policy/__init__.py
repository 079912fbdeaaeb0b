"""The decision engine: compiled bundles deciding tool calls (pure, no I/O)."""

from palisade.policy.types import Call, Clock, Decision, DecisionEngine, Risk, RuleTrace, Verdict

__all__ = ["Call", "Clock", "Decision", "DecisionEngine", "Risk", "RuleTrace", "Verdict"]
