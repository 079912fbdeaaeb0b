"""``palisade bundle replay CANDIDATE --audit FILE… | --from-distributor``: recorded calls
against a candidate.

The records come from local audit files, or from the distributor's central store
(``--from-distributor``, reached as ``palisade fleet`` reaches it: ``--url``, or the
kubeconfig). Exit codes: 0 when the replay is acceptable under ``--fail-on``, 1 when it
is not, 2 on bad input (an unreadable candidate or audit file, an unreachable
distributor).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from palisade.audit.files import iter_records
from palisade.bundle import BundleError, load_file
from palisade.cli.audit import _expand
from palisade.cli.audit_query import parse_time
from palisade.cli.connect import UsageError, add_connection_args, distributor
from palisade.cli.output import Column, add_output_flag, emit
from palisade.distribution.api import ApiError
from palisade.policy.engine import compile_bundle
from palisade.policy.replay import Report, change_doc, replay

FAIL_ON = ("changed", "denied-more", "never")

COLUMNS = (
    Column("TIME", "time"),
    Column("AGENT", "agent"),
    Column("TOOL", "tool"),
    Column("WAS", lambda r: f"{r['was']} ({r['wasRule']})"),
    Column("NOW", lambda r: f"{r['now']} ({r['nowRule']})"),
    Column("SERVER", "server", wide=True),
    Column("REASON", "reason", wide=True),
)


def _when(record: dict[str, Any]) -> float:
    text = record.get("time", "")
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _records(paths: list[str], since: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in _expand(paths):
        for _, record in iter_records(path):
            if not since or _when(record) >= since:
                out.append(record)
    return out


def _central(ns: argparse.Namespace, since: float) -> list[dict[str, Any]]:
    """The newest ``--limit`` decision records of the distributor's store since ``since``."""
    with distributor(ns) as api:
        return api.audit(kind="decision", since=since, limit=ns.limit, newest=1)


def failed(report: Report, fail_on: str) -> bool:
    if fail_on == "changed":
        return bool(report.changes)
    if fail_on == "denied-more":
        return report.denied_more > 0
    return False


def cmd_replay(ns: argparse.Namespace) -> int:
    try:
        candidate = compile_bundle(load_file(ns.candidate))
    except (BundleError, OSError) as exc:
        print(f"palisade bundle replay: {exc}", file=sys.stderr)
        return 2
    if bool(ns.audit) == ns.from_distributor:
        print(
            "palisade bundle replay: give either --audit FILE… or --from-distributor",
            file=sys.stderr,
        )
        return 2
    try:
        since = parse_time(ns.since) if ns.since else 0.0
        records = _central(ns, since) if ns.from_distributor else _records(ns.audit, since)
    except (OSError, ValueError, ApiError, UsageError) as exc:
        print(f"palisade bundle replay: cannot read the audit records: {exc}", file=sys.stderr)
        return 2
    report = replay(records, candidate)
    doc = report.document()
    if ns.output in ("json", "yaml"):
        emit(ns.output, doc)
    else:
        shown = report.changes if ns.output == "wide" else report.examples()
        rows = [change_doc(c) for c in shown]
        emit(ns.output, doc, rows=rows, columns=COLUMNS, title="Decisions that would change")
        _summary(report)
    return 1 if failed(report, ns.fail_on) else 0


def _summary(report: Report) -> None:
    print(
        f"replayed {report.replayed}: {report.unchanged} unchanged, {len(report.changes)} changed"
        f" ({report.denied_more} allowed before and not now, {report.allowed_more} the other"
        f" way); {report.not_replayable} not replayable"
    )
    for rule, n in sorted(report.by_rule().items()):
        print(f"  rule {rule}: {n} changed")
    for agent, n in sorted(report.by_agent().items()):
        print(f"  agent {agent}: {n} changed")
    for why, n in sorted(report.skipped.items()):
        print(f"  not replayable ({why}): {n}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="re-decide recorded calls with a candidate bundle; which decisions would change",
        description="Replay the decision records of audit files (or of the distributor's"
        " central store) against CANDIDATE (a dry"
        " run: no budget consumed) and print, per rule and per agent, the decisions that"
        " would change, with examples. Secret arguments are recorded redacted and budgets"
        " are not replayed. Exit 1 when --fail-on is met, 2 on bad input.",
    )
    p.add_argument("candidate", type=Path, metavar="CANDIDATE")
    p.add_argument("--audit", nargs="+", metavar="FILE", help="audit files or directories")
    p.add_argument(
        "--from-distributor",
        action="store_true",
        help="replay the records of the distributor's central store instead",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=100_000,
        help="with --from-distributor: at most this many records (default 100000)",
    )
    p.add_argument("--since", default="", help="only records since: 1h, 30m, ISO or UNIX")
    p.add_argument(
        "--fail-on",
        choices=FAIL_ON,
        default="changed",
        help="exit 1 when any decision changes (default), when an allowed call would no"
        " longer be allowed, or never",
    )
    add_output_flag(p)
    add_connection_args(p)
    p.set_defaults(func=cmd_replay)
