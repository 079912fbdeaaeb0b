"""One output flag for every command that prints: ``-o table|wide|json|yaml``.

``json`` and ``yaml`` print the command's whole data (the same document in both,
for scripts): one JSON document, a list for lists. ``table`` prints the columns
people read first and ``wide`` adds the rest, as ``kubectl get -o wide`` does.
A command builds its data once and hands it, with its columns, to :func:`emit`.
A command whose data is a stream of records (``palisade audit show``) also
offers ``jsonl``: one JSON object per line.

Cell values are shown as text, never read as console markup: a tool argument
that contains ``[red]`` prints as typed. Colour comes only from a column's
``style``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

FORMATS = ("table", "wide", "json", "yaml")
#: the document formats: what :func:`dump` writes
DOCUMENT_FORMATS = ("json", "yaml")


def add_output_flag(
    parser: argparse.ArgumentParser, default: str = "table", extra: Sequence[str] = ()
) -> None:
    """``-o/--output`` with :data:`FORMATS` and any ``extra`` formats (e.g. ``jsonl``)."""
    choices = (*FORMATS, *extra)
    more = f", {', '.join(extra)}" if extra else ""
    parser.add_argument(
        "-o",
        "--output",
        choices=choices,
        default=default,
        metavar="FORMAT",
        help=f"table (default), wide (more columns), json or yaml (the whole document){more}",
    )


@dataclass(frozen=True)
class Column:
    """A table column: its header and how to read it from one row's mapping."""

    header: str
    value: str | Callable[[Mapping[str, Any]], Any]
    wide: bool = False  # shown only with -o wide
    #: the cell's console style, from its text ("green" for "live"); none by default
    style: Callable[[str], str] | None = None

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
    """Print ``data`` (json/yaml/jsonl) or ``rows`` under ``columns`` (table/wide)."""
    out = out or sys.stdout
    if fmt in DOCUMENT_FORMATS:
        print(dump(data, fmt), file=out)
        return
    items: Sequence[Any] = rows if rows is not None else data
    if fmt == "jsonl":
        for item in items:
            print(json.dumps(item, sort_keys=True, default=str), file=out)
        return
    print_rows(fmt, items, columns, title=title, out=out)


def print_rows(
    fmt: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    *,
    title: str | None = None,
    out: TextIO | None = None,
) -> None:
    """``rows`` as a table; the ``wide`` columns only when ``fmt`` is ``wide``."""
    from rich.text import Text

    shown = [c for c in columns if fmt == "wide" or not c.wide]
    cells: list[list[Text]] = []
    for r in rows:
        line = []
        for c in shown:
            text = c.read(r)
            line.append(Text(text, style=c.style(text) if c.style else ""))
        cells.append(line)
    _print(title, [c.header for c in shown], cells, out)


def print_table(
    title: str | None,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO | None = None,
) -> None:
    """A table of ready-made cells (read as console markup, for callers that style them)."""
    _print(title, headers, rows, out)


def _print(
    title: str | None, headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in headers:
        table.add_column(h, overflow="fold")
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
