"""``palisade audit query``: search audit records stored by the distributor.

palisade audit query [--agent A] [--tool T] [--decision D] [--source S]
                     [--since 1h|ISO|UNIX] [--until ...] [--limit N]
                     [-o table|wide|json|yaml]
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import datetime
from typing import Any

from palisade.cli.connect import distributor
from palisade.cli.fleet import _guard, add_api_args
from palisade.cli.output import Column, emit

_REL = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_time(text: str, now: float | None = None) -> float:
    """``90s``/``15m``/``2h``/``1d`` ago, an ISO 8601 time, or UNIX seconds."""
    if not text:
        return 0.0
    now = time.time() if now is None else now
    m = _REL.match(text)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - float(m.group(1)) * unit
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use 1h, ISO 8601 or UNIX)"
        ) from None


COLUMNS = (
    Column("TIME", "time"),
    Column("SOURCE", "source"),
    Column("KIND", "kind"),
    Column("AGENT", "agent"),
    Column("TOOL", "tool"),
    Column("DECISION", "decision"),
    Column("RULE", "rule_id"),
    Column("REASON", lambda r: str(r.get("reason") or "")[:50]),
    Column("SEQ", "seq", wide=True),
    Column("SERVER", "server", wide=True),
    Column("SESSION", "session", wide=True),
    Column("REVISION", "bundle_revision", wide=True),
    Column("BY", "by", wide=True),
    Column("FULL REASON", "reason", wide=True),
)


def query(ns: argparse.Namespace) -> int:
    with distributor(ns) as api:
        rows: list[dict[str, Any]] = api.audit(
            agent=ns.agent,
            tool=ns.tool,
            decision=ns.decision,
            source=ns.source,
            kind=ns.kind,
            since=ns.since,
            until=ns.until,
            limit=ns.limit,
        )
    emit(ns.output, rows, columns=COLUMNS, title=f"audit records ({len(rows)})")
    return 0


def add_query_parser(sub: Any) -> None:
    p = sub.add_parser("query", help="search audit records stored by the distributor")
    add_query_args(p)


def add_query_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default="")
    p.add_argument("--tool", default="")
    p.add_argument("--decision", default="", help="allow, deny, require_approval, throttle")
    p.add_argument("--source", default="", help="the sidecar or node agent that wrote it")
    p.add_argument("--kind", default="", help="decision, approval, rollback, ...")
    p.add_argument("--since", type=parse_time, default=0.0, help="1h, 30m, ISO or UNIX")
    p.add_argument("--until", type=parse_time, default=0.0)
    p.add_argument("--limit", type=int, default=1000)
    add_api_args(p)
    p.set_defaults(func=_guard(query))
