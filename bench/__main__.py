"""``python -m bench [--quick] [NAME ...]``: run benchmarks, print tables, write JSON.

Each module in ``bench/`` named ``bench_<name>.py`` with a ``run(quick)``
function is a benchmark; they run in name order.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

from bench.common import print_report


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    args = parser.parse_args()
    here = Path(__file__).parent
    found = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )
    selected = args.names or found
    missed = 0
    for name in selected:
        if name not in found:
            print(f"unknown benchmark {name!r}; have: {', '.join(found)}", file=sys.stderr)
            return 2
        module = importlib.import_module(f"bench.bench_{name}")
        report = module.run(quick=args.quick)
        report.check_targets()
        print_report(report)
        print(f"  -> {report.write()}\n")
        missed += sum(not t.met for t in report.targets)
    print(f"{missed} target(s) missed" if missed else "all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
