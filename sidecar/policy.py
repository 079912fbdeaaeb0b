"""The active policy: one immutable snapshot, swapped atomically, fail closed without one.

A :class:`PolicySnapshot` is what a verified bundle becomes: the engine that
decides, plus the registry facts the proxy itself needs (which tools produce
untrusted output, which arguments are secret). :class:`PolicyHolder` keeps the
current snapshot behind a single reference, so a request sees either the old
bundle or the new one, never a mixture; with no snapshot every call is denied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from palisade.policy.types import Call, Decision, DecisionEngine, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ToolFacts:
    """What the bundle's registry says about one tool that matters to the proxy."""

    untrusted_output: bool = False
    secret_arguments: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """An activated bundle."""

    engine: DecisionEngine
    revision: int
    digest: str
    name: str = ""
    #: tool name -> facts, for this sidecar's server only.
    tools: Mapping[str, ToolFacts] = field(default_factory=dict)

    def facts(self, tool: str) -> ToolFacts:
        return self.tools.get(tool, _NO_FACTS)


_NO_FACTS = ToolFacts()


class PolicyHolder:
    """Holds the active snapshot; decides calls, failing closed."""

    def __init__(self, snapshot: PolicySnapshot | None = None) -> None:
        self._snapshot = snapshot

    @property
    def snapshot(self) -> PolicySnapshot | None:
        return self._snapshot

    def activate(self, snapshot: PolicySnapshot) -> None:
        """Make ``snapshot`` the active policy (one reference assignment: atomic)."""
        self._snapshot = snapshot
        log.info(
            "bundle activated",
            extra={
                "bundle": snapshot.name,
                "revision": snapshot.revision,
                "digest": snapshot.digest,
            },
        )

    @property
    def ready(self) -> bool:
        return self._snapshot is not None

    def decide(self, call: Call, *, dry_run: bool = False, explain: bool = False) -> Verdict:
        snap = self._snapshot
        if snap is None:
            return Verdict(Decision.DENY, "no-bundle", "no verified policy bundle is active", 0)
        try:
            return snap.engine.decide(call, dry_run=dry_run, explain=explain)
        except Exception:  # the engine must not raise; if it does, fail closed
            log.exception("decision engine failed", extra={"tool": call.tool, "agent": call.agent})
            return Verdict(
                Decision.DENY,
                "engine-error",
                "policy evaluation failed; denied (fail closed)",
                snap.revision,
                snap.digest,
            )
