"""``palisade approvals``: answer require_approval decisions, as yourself.

  palisade approvals list [--all] [-o json]
  palisade approvals approve ID [--comment TEXT] [--token T | --kubeconfig F]
  palisade approvals deny ID [--comment TEXT] [--token T | --kubeconfig F]

An answer carries your own token (``--token``, ``--token-file``,
``PALISADE_TOKEN``, else your kubeconfig's current user, as kubectl finds it:
palisade/cli/credentials.py). The distributor asks the cluster who you are
(TokenReview) and whether you may answer (the ``approve``/``deny`` verbs on
``approvals.palisade.dev``, which the ClusterRole ``palisade-approver``
grants), and records that name: never one you typed. A rule with ``approvers:
N`` is approved once N different people have approved; one denial denies.
``--by`` is read only by a distributor in ``--insecure-approvers`` (dev) mode.

Every answer is an audit record on the distributor; the waiting sidecar learns
the outcome over its stream, and an approved call may be retried, unchanged,
until the approval expires.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from typing import Any

from palisade.cli.credentials import CredentialError, person_token
from palisade.cli.fleet import _guard, add_api_args, api_from, print_table
from palisade.distribution.api import FleetApi


def _progress(r: dict[str, Any]) -> str:
    if r["status"] == "pending":
        names = r.get("approvers") or []
        if not names:
            return ""
        return f"{', '.join(names)} ({len(names)} of {r.get('required', 1)})"
    return f"{r['by']}: {r['comment']}" if r["by"] else ""


def list_approvals(ns: argparse.Namespace) -> int:
    api = api_from(ns)  # the admin token reads them; else a person allowed to list them
    if not api.token:
        api = _answer_api(ns)
    rows = api.approvals("" if ns.all else "pending")
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
            r.get("required", 1),
            r["client_id"],
            time.strftime("%H:%M:%S", time.gmtime(r["created"])),
            _progress(r),
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
            "APPROVERS",
            "SIDECAR",
            "ASKED",
            "DECIDED BY",
        ],
        table,
    )
    return 0


def _answer_api(ns: argparse.Namespace) -> FleetApi:
    try:
        found = person_token(token=ns.token, token_file=ns.token_file, kubeconfig=ns.kubeconfig)
    except CredentialError as exc:
        raise SystemExit(f"palisade: {exc}") from None
    return FleetApi(ns.url, found.token if found else "")


def decide(ns: argparse.Namespace, approve: bool) -> int:
    by = ns.by or getpass.getuser()
    row = _answer_api(ns).decide(ns.id, approve, by, ns.comment)
    if ns.output == "json":
        print(json.dumps(row, indent=2))
        return 0
    if row["status"] == "pending":
        names = row.get("approvers") or []
        required = int(row.get("required") or 1)
        print(
            f"{row['id']}: approved by {names[-1] if names else by}; {len(names)} of"
            f" {required} approvers so far ({', '.join(names)}), waiting for"
            f" {required - len(names)} more"
        )
        return 0
    until = ""
    if row["status"] == "approved" and row.get("expires"):
        until = time.strftime("%H:%M:%S", time.gmtime(row["expires"]))
    print(
        f"{row['id']}: {row['status']} by {row['by']}"
        + (f", valid until {until} UTC" if until else "")
    )
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="pending approval requests")
    add_api_args(p)
    _person_args(p)
    p.add_argument("--all", action="store_true", help="include decided requests")
    p.set_defaults(func=_guard(list_approvals))
    for name, approve in (("approve", True), ("deny", False)):
        p = sub.add_parser(name, help=f"{name} a pending request, as yourself")
        p.add_argument("id", metavar="ID")
        p.add_argument("--comment", default="", help="why (recorded in the audit log)")
        _person_args(p)
        p.add_argument(
            "--by",
            default="",
            help="only for a distributor in --insecure-approvers mode: the name to record"
            " (default: your user name); an authenticated distributor records who your"
            " token says you are",
        )
        add_api_args(p)
        p.set_defaults(func=_guard(lambda ns, approve=approve: decide(ns, approve)))


def _person_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        default="",
        help="your own bearer token (else --token-file, env PALISADE_TOKEN, or your"
        " kubeconfig's current user)",
    )
    p.add_argument(
        "--kubeconfig",
        default="",
        help="kubeconfig whose current user answers (default: $KUBECONFIG, ~/.kube/config)",
    )
