"""Shared benchmark plumbing: percentiles, RSS, one table printer, JSON results.

A benchmark module exposes ``run(quick: bool) -> Report``. ``python -m bench``
runs them all (or those named on the command line), prints each table and
writes ``bench/results/<name>.json`` with the same figures.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

RESULTS = Path(__file__).parent / "results"


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summarize_us(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean/max of latencies given in seconds, returned in microseconds."""
    us = [s * 1e6 for s in samples_s]
    return {
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us) if us else float("nan"),
        "max_us": max(us) if us else float("nan"),
    }


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


@dataclass
class Target:
    """A stated target: ``metric`` (a column) of row ``row`` compared with ``limit``."""

    description: str
    row: str
    metric: str
    op: str  # "<=" or ">="
    limit: float
    measured: float = float("nan")
    met: bool = False


@dataclass
class Report:
    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check_targets(self) -> None:
        by_name = {str(r.get(self.columns[0])): r for r in self.rows}
        for t in self.targets:
            row = by_name.get(t.row)
            value = float(row[t.metric]) if row and t.metric in row else float("nan")
            t.measured = value
            t.met = value <= t.limit if t.op == "<=" else value >= t.limit

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        doc = {
            "name": self.name,
            "title": self.title,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "columns": self.columns,
            "rows": self.rows,
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }
        path.write_text(json.dumps(doc, indent=2, default=str))
        return path


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:,.3g}"
    return str(value)


def print_report(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    table = Table(title=report.title, title_justify="left")
    for col in report.columns:
        table.add_column(col, justify="left" if col == report.columns[0] else "right")
    for row in report.rows:
        table.add_row(*(fmt(row.get(c, "")) for c in report.columns))
    console.print(table)
    for t in report.targets:
        mark = "[green]met[/]" if t.met else "[red]MISSED[/]"
        console.print(
            f"  target {t.description}: {t.row} {t.metric} {t.op} {fmt(t.limit)}"
            f" -> {fmt(t.measured)} {mark}"
        )
    for note in report.notes:
        console.print(f"  note: {note}")
