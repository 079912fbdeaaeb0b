"""``palisade approvals``: answer require_approval decisions, as yourself.

  palisade approvals list [--all] [-o table|wide|json|yaml]
  palisade approvals show ID [-o ...]
  palisade approvals approve ID [--comment TEXT] [--token T] [-o ...]
  palisade approvals deny ID [--comment TEXT] [--token T] [-o ...]

An answer carries your own token (``--token``, ``--token-file``,
``PALISADE_TOKEN``, else your kubeconfig's user, as kubectl finds it:
palisade/cli/credentials.py). The distributor asks the cluster who you are
(TokenReview) and whether you may answer (the ``approve``/``deny`` verbs on
``approvals.palisade.dev``, which the ClusterRole ``palisade-approver``
grants), and records that name: never one you typed. A rule with ``approvers:
N`` is approved once N different people have approved; one denial denies.
``--by`` is read only by a distributor in ``--insecure-approvers`` (dev) mode.

``list`` and ``show`` read with the admin token where there is one (flag,
environment, or the chart's Secret through the kubeconfig), else with yours.

Every answer is an audit record on the distributor; the waiting sidecar learns
the outcome over its stream, and an approved call may be retried, unchanged,
until the approval expires.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import time
from collections.abc import Mapping
from typing import Any

from palisade.cli.connect import UsageError, admin_token, distributor
from palisade.cli.credentials import CredentialError, person_token
from palisade.cli.fleet import _guard, add_api_args
from palisade.cli.output import Column, emit, print_rows
from palisade.distribution.api import ApiError


def _progress(r: Mapping[str, Any]) -> str:
    if r.get("status") == "pending":
        names = r.get("approvers") or []
        if not names:
            return ""
        return f"{', '.join(names)} ({len(names)} of {r.get('required', 1)})"
    return f"{r['by']}: {r.get('comment', '')}" if r.get("by") else ""


def _clock(key: str, fmt: str = "%H:%M:%S") -> Any:
    def read(r: Mapping[str, Any]) -> str:
        v = r.get(key)
        return time.strftime(fmt, time.gmtime(float(v))) if v else ""

    return read


def _status_style(status: str) -> str:
    return {"pending": "yellow", "approved": "green", "denied": "red", "expired": "red"}.get(
        status, ""
    )


COLUMNS = (
    Column("ID", "id"),
    Column("STATUS", "status", style=_status_style),
    Column("AGENT", "agent"),
    Column("SERVER", "server"),
    Column("TOOL", "tool"),
    Column("ARGUMENTS", lambda r: json.dumps(r.get("arguments"), sort_keys=True)[:60]),
    Column("RULE", "rule_id"),
    Column("ASKED", _clock("created")),
    Column("DECIDED BY", _progress),
    Column("APPROVERS", lambda r: r.get("required", 1), wide=True),
    Column("SIDECAR", "client_id", wide=True),
    Column("TENANT", "tenant", wide=True),
    Column("REASON", "reason", wide=True),
    Column("EXPIRES (UTC)", _clock("expires", "%Y-%m-%d %H:%M:%S"), wide=True),
)


def _person(ns: argparse.Namespace) -> str:
    """The person's own token ('' when none is found); bad flags are usage errors."""
    try:
        found = person_token(
            token=ns.token,
            token_file=ns.token_file,
            kubeconfig=ns.kubeconfig,
            context=ns.context,
        )
    except CredentialError as exc:
        raise UsageError(str(exc)) from None
    return found.token if found else ""


def _read(ns: argparse.Namespace, status: str) -> list[dict[str, Any]]:
    # the admin token reads them; else a person allowed to list them
    token = _person(ns) if ns.token else admin_token(ns) or None
    with distributor(ns, token=token, fallback=functools.partial(_person, ns)) as api:
        return api.approvals(status)


def list_approvals(ns: argparse.Namespace) -> int:
    rows = _read(ns, "" if ns.all else "pending")
    emit(ns.output, rows, columns=COLUMNS, title=f"approvals ({len(rows)})")
    return 0


def show(ns: argparse.Namespace) -> int:
    found = [r for r in _read(ns, "") if r.get("id") == ns.id]
    if not found:
        raise ApiError(f"no approval request {ns.id!r}")
    if ns.output in ("json", "yaml"):
        emit(ns.output, found[0])
    else:
        print_rows(ns.output, found, COLUMNS, title=f"approval {ns.id}")
    return 0


def answer_message(row: Mapping[str, Any], by: str) -> str:
    if row["status"] == "pending":
        names = row.get("approvers") or []
        required = int(row.get("required") or 1)
        return (
            f"{row['id']}: approved by {names[-1] if names else by}; {len(names)} of"
            f" {required} approvers so far ({', '.join(names)}), waiting for"
            f" {required - len(names)} more"
        )
    until = ""
    if row["status"] == "approved" and row.get("expires"):
        until = time.strftime("%H:%M:%S", time.gmtime(row["expires"]))
    return f"{row['id']}: {row['status']} by {row['by']}" + (
        f", valid until {until} UTC" if until else ""
    )


def decide(ns: argparse.Namespace, approve: bool) -> int:
    by = ns.by or getpass.getuser()
    with distributor(ns, token=_person(ns)) as api:
        row = api.decide(ns.id, approve, by, ns.comment)
    if ns.output in ("json", "yaml"):
        emit(ns.output, row)
    elif ns.output == "wide":
        print_rows("wide", [row], COLUMNS, title=f"approval {row.get('id', ns.id)}")
    else:
        print(answer_message(row, by))
    return 0


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("list", help="pending approval requests")
    add_api_args(p)
    _person_args(p)
    p.add_argument("--all", action="store_true", help="include decided requests")
    p.set_defaults(func=_guard(list_approvals))
    p = sub.add_parser("show", help="one approval request, pending or decided")
    p.add_argument("id", metavar="ID")
    add_api_args(p)
    _person_args(p)
    p.set_defaults(func=_guard(show))
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
        p.set_defaults(func=_guard(functools.partial(decide, approve=approve)))


def _person_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--token",
        default="",
        help="your own bearer token (else --token-file, env PALISADE_TOKEN, or your"
        " kubeconfig's user)",
    )
