"""``python -m bench.markdown [NAME ...]``: the results in ``bench/results/`` as Markdown.

One section per benchmark (title, command, time; the table; targets; notes),
in the order given or by name: what docs/benchmarks.md pastes after a full run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, fmt


def _cell(value: Any) -> str:
    return "" if value is None else fmt(value).replace("|", "\\|")


def section(doc: dict[str, Any]) -> str:
    cols: list[str] = doc["columns"]
    out = [
        f"### {doc['title']}  (`python -m bench {doc['name']}`, {doc['time']})",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    out += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in doc["rows"]]
    out.append("")
    for t in doc["targets"]:
        verdict = "met" if t["met"] else "**missed**"
        out.append(
            f"- target {t['description']}: {fmt(t['measured'])} ({t['op']} {fmt(t['limit'])})"
            f" — {verdict}"
        )
    out += [f"- note: {note}" for note in doc["notes"]]
    return "\n".join(out) + "\n"


def main(names: list[str]) -> int:
    paths = [RESULTS / f"{n}.json" for n in names] or sorted(RESULTS.glob("*.json"))
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        print(f"no results: {', '.join(missing)}; run `make bench` first", file=sys.stderr)
        return 2
    print("\n".join(section(json.loads(Path(p).read_text())) for p in paths), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
