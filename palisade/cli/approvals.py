"""``palisade approvals``: answer require_approval decisions.

  palisade approvals list [--all] [-o json]
  palisade approvals approve ID [--comment TEXT] [--by NAME]
  palisade approvals deny ID [--comment TEXT] [--by NAME]

Every answer records who decided and why (an audit record on the distributor);
the waiting sidecar learns it over its stream, and an approved call may be
retried, unchanged, until the approval expires.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time

from palisade.cli.fleet import _guard, add_api_args, api_from, print_table


def list_approvals(ns: argparse.Namespace) -> int:
    rows = api_from(ns).approvals("" if ns.all else "pending")
    if ns.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            r["id"],
            r["status"],
            r["agent"],
            r["server"],
            r["tool"],
            json.dumps(r["arguments"], sort_keys=True)[:60],
            r["rule_id"],
            r["client_id"],
            time.strftime("%H:%M:%S", time.gmtime(r["created"])),
            f"{r['by']}: {r['comment']}" if r["by"] else "",
        ]
        for r in rows
    ]
    print_table(
        f"approvals ({len(rows)})",
        [
            "ID",
            "STATUS",
            "AGENT",
            "SERVER",
            "TOOL",
            "ARGUMENTS",
            "RULE",
            "SIDECAR",
            "ASKED",
            "DECIDED BY",
        ],
        table,
    )
    return 0


def decide(ns: argparse.Namespace, approve: bool) -> int:
    row = api_from(ns).decide(ns.id, approve, ns.by or getpass.getuser(), ns.comment)
    if ns.output == "json":
        print(json.dumps(row, indent=2))
    else:
        until = time.strftime("%H:%M:%S", time.gmtime(row["expires"])) if approve else ""
        print(
            f"{row['id']}: {row['status']} by {row['by']}"
            + (f", valid until {until} UTC" if until else "")
        )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="pending approval requests")
    add_api_args(p)
    p.add_argument("--all", action="store_true", help="include decided requests")
    p.set_defaults(func=_guard(list_approvals))
    for name, approve in (("approve", True), ("deny", False)):
        p = sub.add_parser(name, help=f"{name} a pending request")
        p.add_argument("id", metavar="ID")
        p.add_argument("--comment", default="", help="why (recorded in the audit log)")
        p.add_argument("--by", default="", help="who decides (default: your user name)")
        add_api_args(p)
        p.set_defaults(func=_guard(lambda ns, approve=approve: decide(ns, approve)))
