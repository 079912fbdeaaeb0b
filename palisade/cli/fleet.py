"""``palisade fleet``: who is connected to the distributor, what they run, who is stale.

  palisade fleet [sidecars|nodes|bundles] [-o table|wide|json|yaml] [--all]
  (no WHAT: all three)
  palisade fleet rollback --to REVISION [--by NAME]   (also: palisade bundle rollback)

The distributor is reached by ``--url``, ``PALISADE_DISTRIBUTOR_URL``, or
through the kubeconfig (:mod:`palisade.cli.connect`). Exit status 1 when it
cannot be reached or refuses the request, 2 for bad input.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from palisade.cli.connect import UsageError, add_connection_args, distributor
from palisade.cli.output import Column, add_output_flag, emit, print_rows
from palisade.cli.output import print_table as print_table  # re-exported for older callers
from palisade.distribution.api import ApiError, FleetApi


def add_api_args(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """How to reach the distributor, and ``-o``: every command that talks to it.

    ``nested``: a subcommand of a parser that has these flags too (``palisade
    fleet -n ns sidecars``): what is not given here keeps the parent's value.
    """
    add_connection_args(parser, nested=nested)
    add_output_flag(parser, default=argparse.SUPPRESS if nested else "table")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def state_style(state: str) -> str:
    return {"live": "green", "stale": "yellow", "gone": "red"}.get(state, "")


def _nack(width: int) -> Callable[[Mapping[str, Any]], str]:
    def read(r: Mapping[str, Any]) -> str:
        if not r.get("nack_revision"):
            return ""
        return f"{r['nack_revision']}: {str(r.get('nack_error') or '')[:width]}"

    return read


def _age(r: Mapping[str, Any]) -> str:
    return _ago(float(r.get("age_s") or 0.0))


SIDECAR_COLUMNS = (
    Column("ID", "id"),
    Column("NAMESPACE/POD", lambda r: f"{r.get('namespace', '')}/{r.get('pod', '')}"),
    Column("SERVER", "server"),
    Column("STATE", "state", style=state_style),
    Column("REVISION", "revision"),
    Column("NACK", _nack(60)),
    Column("HEALTH", "health"),
    Column("LAST SEEN", _age),
    Column("REPLICA", "replica"),
    Column("NODE", "node", wide=True),
    Column("TENANT", "tenant", wide=True),
    Column("VERSION", "version", wide=True),
    Column("DIGEST", lambda r: str(r.get("digest") or "")[:19], wide=True),
    Column("COUNTERS", lambda r: json.dumps(r.get("counters") or {}, sort_keys=True), wide=True),
)

NODE_COLUMNS = (
    Column("NODE", lambda r: r.get("node") or r.get("id")),
    Column("STATE", "state", style=state_style),
    Column("REVISION", "revision"),
    Column("NACK", _nack(60)),
    Column("HEALTH", "health"),
    Column("LAST SEEN", _age),
    Column("REPLICA", "replica"),
    Column(
        "SUMMARY",
        lambda r: json.dumps(r["summary"], sort_keys=True)[:60] if r.get("summary") else "",
    ),
    Column("ID", "id", wide=True),
    Column("VERSION", "version", wide=True),
    Column("DIGEST", lambda r: str(r.get("digest") or "")[:19], wide=True),
)


def _created(b: Mapping[str, Any]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(b.get("created") or 0)))


BUNDLE_COLUMNS = (
    Column("REVISION", "revision"),
    Column("DIGEST", lambda b: str(b.get("digest") or "")[:19]),
    Column("NAME", "name"),
    Column("ORIGIN", "origin"),
    Column("BY", "author"),
    Column("RUNNING", lambda b: f"{b.get('subscribers')}/{b.get('fleet')}"),
    Column("NACKED", lambda b: b.get("nacked") or ""),
    Column("CREATED (UTC)", _created),
    Column("FULL DIGEST", "digest", wide=True),
)


def _print_clients(fmt: str, kind: str, rows: list[dict[str, Any]]) -> None:
    title = f"{'node agents' if kind == 'node' else 'sidecars'} ({len(rows)})"
    columns = NODE_COLUMNS if kind == "node" else SIDECAR_COLUMNS
    print_rows(fmt, rows, columns, title=title)


def _print_bundles(fmt: str, body: dict[str, Any]) -> None:
    print_rows(fmt, body.get("bundles") or [], BUNDLE_COLUMNS, title="bundles")
    err = body.get("last_error")
    if err:
        print("last source error (the previous revision is still served):", file=sys.stderr)
        for e in err.get("errors") or ():
            code = f" [{e['code']}]" if e.get("code") else ""
            print(f"  {e['file']}:{e['line']}: {e['field']}: {e['message']}{code}", file=sys.stderr)
    gate = body.get("replay")
    if gate and gate.get("verdict") in ("flagged", "refused"):
        print(
            f"replay gate {gate['verdict']} candidate {str(gate.get('digest', ''))[:12]}:"
            f" {gate.get('message', '')}",
            file=sys.stderr,
        )


def show_clients(ns: argparse.Namespace, kind: str) -> int:
    with distributor(ns) as api:
        rows = api.fleet(kind, include_gone=ns.all)
    if ns.output in ("json", "yaml"):
        emit(ns.output, rows)
    else:
        _print_clients(ns.output, kind, rows)
    return 0


def show_bundles(ns: argparse.Namespace) -> int:
    with distributor(ns) as api:
        body = api.bundles()
    if ns.output in ("json", "yaml"):
        emit(ns.output, body)
    else:
        _print_bundles(ns.output, body)
    return 0


def rollback_message(ns: argparse.Namespace, body: Mapping[str, Any]) -> str:
    rev = body["revision"]
    if body.get("new"):
        return f"revision {ns.to} re-published as revision {rev['revision']} ({rev['digest']})"
    return f"revision {rev['revision']} already has the content of {ns.to}; nothing to do"


def rollback(ns: argparse.Namespace) -> int:
    with distributor(ns) as api:
        body = api.rollback(ns.to, ns.by or getpass.getuser())
    if ns.output in ("json", "yaml"):
        emit(ns.output, body)
        return 0
    rev = body["revision"]
    row = {
        **rev,
        "new": bool(body.get("new")),
        "from": ns.to,
        "message": rollback_message(ns, body),
    }
    if ns.output == "wide":
        print_rows(
            "wide",
            [row],
            (
                Column("REVISION", "revision"),
                Column("FROM", "from"),
                Column("NEW", "new"),
                Column("DIGEST", "digest"),
            ),
            title="rollback",
        )
        return 0
    print(row["message"])
    return 0


def add_rollback_parser(sub: Any, *, nested: bool = False) -> None:
    """Also mounted as ``palisade bundle rollback`` (there not ``nested``)."""
    p = sub.add_parser("rollback", help="re-publish an earlier revision as a new one")
    p.add_argument("--to", type=int, required=True, metavar="REVISION")
    p.add_argument("--by", default="", help="who rolls back (default: your user name)")
    add_api_args(p, nested=nested)
    p.set_defaults(func=_guard(rollback))


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Distributor errors as one line on stderr: exit 1 (unreachable, refused), 2 (bad input)."""

    @functools.wraps(fn)
    def run(ns: argparse.Namespace) -> int:
        try:
            return int(fn(ns))
        except UsageError as exc:
            print(f"palisade: {exc}", file=sys.stderr)
            return 2
        except ApiError as exc:
            print(f"palisade: {exc}", file=sys.stderr)
            return 1

    return run


def show_all(ns: argparse.Namespace) -> int:
    """``palisade fleet`` alone: sidecars, node agents and the recent bundles."""
    with distributor(ns) as api:
        doc = fleet_document(api)
    if ns.output in ("json", "yaml"):
        emit(ns.output, doc)
        return 0
    _print_clients(ns.output, "sidecar", doc["sidecars"])
    _print_clients(ns.output, "node", doc["nodes"])
    _print_bundles(ns.output, doc)
    return 0


def fleet_document(api: FleetApi) -> dict[str, Any]:
    return {"sidecars": api.fleet("sidecar"), "nodes": api.fleet("node"), **api.bundles()}


def register(parser: argparse.ArgumentParser) -> None:
    add_api_args(parser)
    parser.set_defaults(func=_guard(show_all))
    sub = parser.add_subparsers(dest="what", metavar="WHAT")
    for name, kind, help_text in (
        ("sidecars", "sidecar", "connected sidecars, their revision and health"),
        ("nodes", "node", "node agents, their revision, health and GPU summary"),
    ):
        p = sub.add_parser(name, help=help_text)
        add_api_args(p, nested=True)
        p.add_argument("--all", action="store_true", help="include clients gone long ago")
        p.set_defaults(func=_guard(functools.partial(show_clients, kind=kind)))
    p = sub.add_parser("bundles", help="revision history and rollout progress")
    add_api_args(p, nested=True)
    p.set_defaults(func=_guard(show_bundles))
    add_rollback_parser(sub, nested=True)
