"""The replay gate: a new revision is replayed against recent calls before it is published.

Before the distributor publishes a revision whose content changed, it re-decides the
calls recorded in its central audit store over the last ``window_s`` (at most
``max_records``, the newest) with the candidate (:func:`palisade.policy.replay.replay`,
a dry run) and judges the result (:func:`palisade.policy.replay.judge`): a candidate
that would no longer allow more than ``threshold`` of the calls that were allowed is

- ``flag``ged (the default): published, with a warning in the log, in
  ``GET /v1/bundles`` (``replay``) and in ``palisade_distributor_replay_*``;
- ``refuse``d: not published; the fleet stays on its revision and the refusal is
  reported like a validation error (the PolicyBundle status, ``palisade fleet
  bundles``), until the policy changes or the gate is turned to ``flag``;
- or not checked at all (``off``).

A rollback is never gated: it is an operator's explicit choice of a revision.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from distributor.store import AsyncStore
from palisade.bundle import from_document
from palisade.policy.engine import compile_bundle
from palisade.policy.replay import Judgment, judge, replay

log = logging.getLogger(__name__)


class GateMode(StrEnum):
    OFF = "off"
    FLAG = "flag"
    REFUSE = "refuse"


@dataclass(frozen=True)
class GateSettings:
    mode: GateMode = GateMode.FLAG
    threshold: float = 0.05
    """Fraction of the recently allowed calls a candidate may stop allowing."""
    window_s: float = 86_400.0
    max_records: int = 20_000


@dataclass(frozen=True)
class GateResult:
    digest: str
    verdict: str
    """``passed``, ``flagged``, ``refused``, or ``unchecked`` (off, or the audit store failed)."""
    judgment: Judgment | None = None
    replayed: int = 0
    note: str = ""

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"

    @property
    def message(self) -> str:
        return self.judgment.message if self.judgment else self.note

    def as_dict(self, time: float) -> dict[str, Any]:
        j = self.judgment
        return {
            "time": time,
            "digest": self.digest,
            "verdict": self.verdict,
            "replayed": self.replayed,
            "allowedBefore": j.allowed_before if j else 0,
            "deniedMore": j.denied_more if j else 0,
            "message": self.message,
        }


async def check(
    settings: GateSettings, store: AsyncStore, document: dict[str, Any], digest: str, now: float
) -> GateResult:
    """Replay the window's decision records against ``document``; never raises."""
    if settings.mode is GateMode.OFF:
        return GateResult(digest, "unchecked", note="the replay gate is off")
    try:
        records = await store.call(
            store.store.query_audit,
            kind="decision",
            since=now - settings.window_s,
            limit=settings.max_records,
            newest=True,
        )
    except Exception as exc:  # the gate must not stop publishing when the store is down
        log.warning("replay gate: cannot read recent calls; not checked", extra={"error": str(exc)})
        return GateResult(digest, "unchecked", note=f"recent calls unreadable: {exc}")
    engine = compile_bundle(from_document(document))
    report = await asyncio.to_thread(replay, records, engine)
    judgment = judge(report, settings.threshold)
    if not judgment.over:
        return GateResult(digest, "passed", judgment, report.replayed)
    verdict = "refused" if settings.mode is GateMode.REFUSE else "flagged"
    log.warning(
        "replay gate: the candidate %s",
        judgment.message,
        extra={"verdict": verdict, "digest": digest},
    )
    return GateResult(digest, verdict, judgment, report.replayed)
