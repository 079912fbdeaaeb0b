"""One output flag for every command that prints: ``-o table|wide|json|yaml``.

``json`` and ``yaml`` print the command's whole data (the same document in both,
for scripts); ``table`` prints the columns people read first and ``wide`` adds
the rest, as ``kubectl get -o wide`` does. A command builds its data once and
hands it, with its columns, to :func:`emit`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("table", "wide", "json", "yaml")


def add_output_flag(parser: argparse.ArgumentParser, default: str = "table") -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=default,
        help="table (default), wide (more columns), json or yaml (the whole document)",
    )


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read it from one row's mapping."""

    header: str
    value: str | Callable[[Mapping[str, Any]], Any]
    wide: bool = False  # shown only with -o wide

    def read(self, row: Mapping[str, Any]) -> str:
        v = row.get(self.value) if isinstance(self.value, str) else self.value(row)
        return "" if v is None else str(v)


def dump(data: Any, fmt: str) -> str:
    """``data`` as JSON or YAML text (fmt is ``json`` or ``yaml``)."""
    if fmt == "json":
        return json.dumps(data, indent=2, default=str)
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True)).rstrip()
    raise ValueError(f"not a document format: {fmt}")


def emit(
    fmt: str,
    data: Any,
    *,
    rows: Sequence[Mapping[str, Any]] | None = None,
    columns: Sequence[Column] = (),
    title: str | None = None,
    out: TextIO | None = None,
) -> None:
    """Print ``data`` (json/yaml) or ``rows`` under ``columns`` (table/wide)."""
    out = out or sys.stdout
    if fmt in ("json", "yaml"):
        print(dump(data, fmt), file=out)
        return
    shown = [c for c in columns if fmt == "wide" or not c.wide]
    table_rows = [[c.read(r) for c in shown] for r in (rows if rows is not None else data)]
    print_table(title, [c.header for c in shown], table_rows, out=out)


def print_table(
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h)
    for row in rows:
        table.add_row(*row)
    Console(width=200, file=out or sys.stdout).print(table)


def _plain(data: Any) -> Any:
    """Tuples and other sequences as lists, so YAML has no Python tags."""
    if isinstance(data, Mapping):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_plain(v) for v in data]
    return data
