"""Replay recorded decisions against a candidate bundle: which would change.

Pure: records (the ``decision`` audit records as plain dicts) and a compiled
candidate in, a :class:`Report` out. Each record is re-decided as a dry run (no
budget consumed) from what the record holds: agent, server, tool, session,
on-behalf-of and the arguments as recorded. What a record does not hold cannot be
replayed faithfully and is said so:

- arguments a bundle marks secret are stored redacted, so a ``when`` that reads
  them sees the redaction marker;
- the call's labels are not recorded, and the server's reported version only in
  records that carry ``details.server_version``: a record the candidate refuses
  only for the server's version without it is counted as not replayable;
- budgets (rate limits, spend caps, mutation caps) are not replayed: they depend
  on the order and timing of every call, and are reported as they were.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from palisade.policy.engine import Engine
from palisade.policy.types import Call, Decision

#: How many example changes a report keeps per (old, new) decision pair.
EXAMPLES_PER_KIND = 5
_BUDGET_PREFIX = "budget/"


@dataclass(frozen=True, slots=True)
class Change:
    time: str
    agent: str
    server: str
    tool: str
    was: str
    was_rule: str
    now: str
    now_rule: str
    reason: str


@dataclass
class Report:
    replayed: int = 0
    unchanged: int = 0
    #: of ``unchanged``, the calls that were (and stay) allowed
    allowed_unchanged: int = 0
    not_replayable: int = 0
    #: every changed record, in the order replayed
    changes: list[Change] = field(default_factory=list)
    #: why records could not be replayed, with counts
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def denied_more(self) -> int:
        """Calls that were allowed and would now not be."""
        return sum(1 for c in self.changes if c.was == "allow" and c.now != "allow")

    @property
    def allowed_more(self) -> int:
        return sum(1 for c in self.changes if c.was != "allow" and c.now == "allow")

    def by_rule(self) -> Counter[str]:
        """Changes counted by the rule that decides them now."""
        return Counter(c.now_rule for c in self.changes)

    def by_agent(self) -> Counter[str]:
        return Counter(c.agent for c in self.changes)

    def examples(self) -> list[Change]:
        kept: list[Change] = []
        seen: Counter[tuple[str, str, str]] = Counter()
        for c in self.changes:
            key = (c.was, c.now, c.now_rule)
            if seen[key] < EXAMPLES_PER_KIND:
                kept.append(c)
            seen[key] += 1
        return kept

    def document(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "changed": len(self.changes),
            "deniedMore": self.denied_more,
            "allowedMore": self.allowed_more,
            "notReplayable": self.not_replayable,
            "skipped": dict(sorted(self.skipped.items())),
            "byRule": dict(sorted(self.by_rule().items())),
            "byAgent": dict(sorted(self.by_agent().items())),
            "changes": [change_doc(c) for c in self.changes],
        }


def change_doc(c: Change) -> dict[str, str]:
    return {
        "time": c.time,
        "agent": c.agent,
        "server": c.server,
        "tool": c.tool,
        "was": c.was,
        "wasRule": c.was_rule,
        "now": c.now,
        "nowRule": c.now_rule,
        "reason": c.reason,
    }


def _text(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key, "")
    return value if isinstance(value, str) else ""


def replay(records: Iterable[Mapping[str, Any]], candidate: Engine) -> Report:
    """Re-decide every ``decision`` record with ``candidate``; never raises on a record."""
    report = Report()
    for record in records:
        if record.get("kind", "decision") != "decision":
            continue
        problem = _why_not(record)
        if problem:
            report.not_replayable += 1
            report.skipped[problem] += 1
            continue
        arguments = record.get("arguments")
        details = record.get("details")
        version = details.get("server_version", "") if isinstance(details, dict) else ""
        call = Call(
            agent=_text(record, "agent"),
            server=_text(record, "server"),
            tool=_text(record, "tool"),
            arguments=arguments if isinstance(arguments, dict) else {},
            session=_text(record, "session") or "replay",
            on_behalf_of=_text(record, "on_behalf_of"),
            server_version=version if isinstance(version, str) else "",
        )
        try:
            verdict = candidate.decide(call, dry_run=True)
        except Exception as exc:  # the engine does not raise; a record must not stop a replay
            report.not_replayable += 1
            report.skipped[f"engine error: {type(exc).__name__}"] += 1
            continue
        if (
            verdict.rule_id == "registry"
            and not call.server_version
            and "version" in verdict.reason
        ):
            report.not_replayable += 1
            report.skipped["the server's version is not recorded"] += 1
            continue
        report.replayed += 1
        was, now = _text(record, "decision"), str(verdict.decision)
        if was == now:
            report.unchanged += 1
            report.allowed_unchanged += was == "allow"
            continue
        report.changes.append(
            Change(
                time=_text(record, "time"),
                agent=call.agent,
                server=call.server,
                tool=call.tool,
                was=was,
                was_rule=_text(record, "rule_id"),
                now=now,
                now_rule=verdict.rule_id,
                reason=verdict.reason,
            )
        )
    return report


def _why_not(record: Mapping[str, Any]) -> str:
    if not all(_text(record, k) for k in ("agent", "server", "tool", "decision")):
        return "a field the decision needs is missing"
    if _text(record, "decision") not in {d.value for d in Decision}:
        return "an unknown recorded decision"
    if _text(record, "rule_id").startswith(_BUDGET_PREFIX):
        return "decided by a budget (budgets are not replayed)"
    if _text(record, "rule_id") in ("audit-unavailable", "failure"):
        return "decided by a failure, not by policy"
    return ""


@dataclass(frozen=True, slots=True)
class Judgment:
    """What a replay gate makes of a report: ``passed``, or over the threshold."""

    over: bool
    allowed_before: int
    denied_more: int
    message: str

    @property
    def ratio(self) -> float:
        return self.denied_more / self.allowed_before if self.allowed_before else 0.0


def judge(report: Report, threshold: float) -> Judgment:
    """Over when more than ``threshold`` (a fraction) of the replayed calls that were
    allowed would no longer be; with no allowed call replayed, never over."""
    allowed = sum(1 for c in report.changes if c.was == "allow") + report.allowed_unchanged
    denied = report.denied_more
    ratio = denied / allowed if allowed else 0.0
    over = allowed > 0 and ratio > threshold
    rules = ", ".join(
        f"{rule} ({n})"
        for rule, n in sorted(
            Counter(c.now_rule for c in report.changes if c.was == "allow").items()
        )
    )
    message = (
        f"would no longer allow {denied} of {allowed} recently allowed calls"
        f" ({ratio:.1%}, threshold {threshold:.1%})" + (f"; by rule: {rules}" if rules else "")
    )
    return Judgment(over, allowed, denied, message)
