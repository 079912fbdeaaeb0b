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
from typing import Any

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

    #: What decides: the core's fail-closed :class:`~palisade.policy.guard.Guard`.
    engine: DecisionEngine
    revision: int
    digest: str
    name: str = ""
    #: The compiled engine, for registry lookups (tool definition pins); None in tests.
    compiled: Any = None
    #: tool name -> facts, for this sidecar's server only.
    tools: Mapping[str, ToolFacts] = field(default_factory=dict)

    def facts(self, tool: str) -> ToolFacts:
        return self.tools.get(tool, _NO_FACTS)

    def pin_problem(self, server: str, tool: Mapping[str, Any] | None, name: str) -> str:
        """Why a tool definition breaks the registry's pin ("" when fine or not pinned).

        A pinned tool whose definition the proxy has not seen (in the server's
        ``tools/list``) cannot be checked, so it counts as a problem: fail closed.
        """
        if self.compiled is None:
            return ""
        registered = self.compiled.tool(server, name)
        if registered is None or not registered.pinned:
            return ""
        if tool is None:
            return (
                f"tool {name!r} is pinned and its definition was not seen in the server's "
                "tools/list for this session; list the tools first"
            )
        # the whole definition: annotations (the declared risk) and all the rest
        return str(self.compiled.pin_problem(server, name, definition=tool))


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
