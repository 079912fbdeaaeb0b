"""``palisade fleet``: who is connected to the distributor, what they run, who is stale.

  palisade fleet [sidecars|nodes|bundles] [--url URL] [-o table|json] [--all]
  (no WHAT: all three)
  palisade fleet rollback --to REVISION [--by NAME]   (also: palisade bundle rollback)

Tables for people (rich), ``-o json`` for scripts. Exit status 1 when the
distributor cannot be reached or refuses the request.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from palisade.distribution.api import DEFAULT_URL, ApiError, FleetApi


def add_api_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("PALISADE_DISTRIBUTOR_URL", DEFAULT_URL),
        help="distributor HTTP API (env PALISADE_DISTRIBUTOR_URL)",
    )
    parser.add_argument(
        "--token-file", type=Path, help="bearer token file (else env PALISADE_ADMIN_TOKEN)"
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")


def api_from(ns: argparse.Namespace) -> FleetApi:
    token = os.environ.get("PALISADE_ADMIN_TOKEN", "")
    if ns.token_file:
        token = ns.token_file.read_text().strip()
    return FleetApi(ns.url, token)


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console(width=200).print(table)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _style_state(state: str) -> str:
    return {"live": "[green]live[/]", "stale": "[yellow]stale[/]", "gone": "[red]gone[/]"}.get(
        state, state
    )


def show_clients(ns: argparse.Namespace, kind: str) -> int:
    rows = api_from(ns).fleet(kind, include_gone=ns.all)
    if ns.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    if kind == "node":
        cols = ["NODE", "STATE", "REVISION", "NACK", "HEALTH", "LAST SEEN", "REPLICA", "SUMMARY"]
        table = [
            [
                r["node"] or r["id"],
                _style_state(r["state"]),
                r["revision"],
                f"{r['nack_revision']}: {r['nack_error']}" if r["nack_revision"] else "",
                r["health"],
                _ago(r["age_s"]),
                r["replica"],
                json.dumps(r["summary"], sort_keys=True)[:60] if r["summary"] else "",
            ]
            for r in rows
        ]
    else:
        cols = [
            "ID",
            "NAMESPACE/POD",
            "SERVER",
            "STATE",
            "REVISION",
            "NACK",
            "HEALTH",
            "LAST SEEN",
            "REPLICA",
        ]
        table = [
            [
                r["id"],
                f"{r['namespace']}/{r['pod']}",
                r["server"],
                _style_state(r["state"]),
                r["revision"],
                f"{r['nack_revision']}: {r['nack_error'][:60]}" if r["nack_revision"] else "",
                r["health"],
                _ago(r["age_s"]),
                r["replica"],
            ]
            for r in rows
        ]
    print_table(f"{'node agents' if kind == 'node' else 'sidecars'} ({len(rows)})", cols, table)
    return 0


def show_bundles(ns: argparse.Namespace) -> int:
    body = api_from(ns).bundles()
    if ns.output == "json":
        print(json.dumps(body, indent=2))
        return 0
    table = [
        [
            b["revision"],
            b["digest"][:19],
            b["name"],
            b["origin"],
            b["author"],
            f"{b['subscribers']}/{b['fleet']}",
            b["nacked"] or "",
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(b["created"])),
        ]
        for b in body["bundles"]
    ]
    print_table(
        "bundles",
        ["REVISION", "DIGEST", "NAME", "ORIGIN", "BY", "RUNNING", "NACKED", "CREATED (UTC)"],
        table,
    )
    err = body.get("last_error")
    if err:
        print("last source error (the previous revision is still served):", file=sys.stderr)
        for e in err["errors"]:
            print(f"  {e['file']}:{e['line']}: {e['field']}: {e['message']}", file=sys.stderr)
    return 0


def rollback(ns: argparse.Namespace) -> int:
    body = api_from(ns).rollback(ns.to, ns.by or getpass.getuser())
    rev = body["revision"]
    if ns.output == "json":
        print(json.dumps(body, indent=2))
    elif body["new"]:
        print(f"revision {ns.to} re-published as revision {rev['revision']} ({rev['digest']})")
    else:
        print(f"revision {rev['revision']} already has the content of {ns.to}; nothing to do")
    return 0


def add_rollback_parser(sub: Any) -> None:
    """Also mounted as ``palisade bundle rollback``."""
    p = sub.add_parser("rollback", help="re-publish an earlier revision as a new one")
    p.add_argument("--to", type=int, required=True, metavar="REVISION")
    p.add_argument("--by", default="", help="who rolls back (default: your user name)")
    add_api_args(p)
    p.set_defaults(func=_guard(rollback))


def _guard(fn: Any) -> Any:
    def run(ns: argparse.Namespace) -> int:
        try:
            return int(fn(ns))
        except ApiError as exc:
            print(f"palisade: {exc}", file=sys.stderr)
            return 1

    return run


def show_all(ns: argparse.Namespace) -> int:
    """``palisade fleet`` alone: sidecars, node agents and the recent bundles."""
    if ns.output == "json":
        api = api_from(ns)
        doc = {"sidecars": api.fleet("sidecar"), "nodes": api.fleet("node"), **api.bundles()}
        print(json.dumps(doc, indent=2))
        return 0
    ns.all = False
    show_clients(ns, "sidecar")
    show_clients(ns, "node")
    return show_bundles(ns)


def register(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.set_defaults(func=_guard(show_all))
    sub = parser.add_subparsers(dest="what", metavar="WHAT")
    for name, kind, help_text in (
        ("sidecars", "sidecar", "connected sidecars, their revision and health"),
        ("nodes", "node", "node agents, their revision, health and GPU summary"),
    ):
        p = sub.add_parser(name, help=help_text)
        add_api_args(p)
        p.add_argument("--all", action="store_true", help="include clients gone long ago")
        p.set_defaults(func=_guard(lambda ns, kind=kind: show_clients(ns, kind)))
    p = sub.add_parser("bundles", help="revision history and rollout progress")
    add_api_args(p)
    p.set_defaults(func=_guard(show_bundles))
    add_rollback_parser(sub)
