"""Stand-ins for kind, docker, helm and kubectl that record every command line.

No Docker daemon and no kind here, and the harness control plane has no nodes:
the kind scripts run with these on ``PATH``. Each stand-in appends one JSON line
(``{"argv": [tool, *args], "cwd": ...}``) to a log, then either answers from
canned replies or, given the real binary, runs it (after dropping what needs a
node: ``helm --wait``/``--timeout``, ``kubectl rollout status``).

    tools = FakeTools(tmp_path)
    tools.add("kind")
    tools.add("kubectl", replies={("get", "job"): "Complete"})
    tools.add("helm", real=find_binaries().helm, drop=("--wait",), drop_with_value=("--timeout",))
    subprocess.run([...], env={"PATH": tools.path(...)})
    tools.calls()  # [["kind", "get", "clusters"], ...]

The stand-in itself is this file run as a script: ``<bin>/<tool>`` is a two-line
shell script that execs it with its own path and its arguments.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG = "fakes.json"


@dataclass
class FakeTools:
    """A folder of stand-ins (``bin``) and the log they write (``calls.jsonl``)."""

    root: Path
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def log(self) -> Path:
        return self.root / "calls.jsonl"

    def add(
        self,
        name: str,
        *,
        replies: Mapping[tuple[str, ...], str] | None = None,
        exit_code: int = 0,
        real: Path | None = None,
        drop: Sequence[str] = (),
        drop_with_value: Sequence[str] = (),
        succeed_on: Sequence[tuple[str, ...]] = (),
    ) -> None:
        """A stand-in for ``name``.

        ``replies``: printed when every word of the key is among the arguments.
        ``real``: run this binary instead of answering, without the flags in
        ``drop`` (and those in ``drop_with_value`` with the argument after them);
        a command holding every word of one of ``succeed_on`` is not run (exit 0).
        """
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.tools[name] = {
            "replies": [[list(words), text] for words, text in (replies or {}).items()],
            "exit": exit_code,
            "real": str(real) if real else "",
            "drop": list(drop),
            "drop_with_value": list(drop_with_value),
            "succeed_on": [list(words) for words in succeed_on],
        }
        (self.bin_dir / CONFIG).write_text(json.dumps({"log": str(self.log), "tools": self.tools}))
        shim = self.bin_dir / name
        here = shlex.quote(str(Path(__file__).resolve()))
        shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {here} "$0" "$@"\n')
        shim.chmod(0o755)

    def path(self, *more: Path | str) -> str:
        """``PATH`` with the stand-ins first, then ``more``, then /usr/bin:/bin."""
        return ":".join([str(self.bin_dir), *map(str, more), "/usr/bin", "/bin"])

    def records(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def calls(self) -> list[list[str]]:
        """Every recorded command line, in order, as ``[tool, *args]``."""
        return [record["argv"] for record in self.records()]


def _without(args: list[str], drop: list[str], drop_with_value: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in drop or arg.split("=", 1)[0] in drop:
            continue
        elif arg in drop_with_value:
            skip = True
        elif arg.split("=", 1)[0] in drop_with_value:
            continue
        else:
            out.append(arg)
    return out


def main(argv: list[str]) -> int:
    shim, args = Path(argv[0]), argv[1:]
    config = json.loads((shim.parent / CONFIG).read_text())
    tool = config["tools"][shim.name]
    with open(config["log"], "a") as log:
        log.write(json.dumps({"argv": [shim.name, *args], "cwd": os.getcwd()}) + "\n")
    if tool["real"]:
        if any(all(w in args for w in words) for words in tool["succeed_on"]):
            return 0
        real = tool["real"]
        os.execv(real, [real, *_without(args, tool["drop"], tool["drop_with_value"])])
    for words, text in tool["replies"]:
        if all(w in args for w in words):
            print(text)
    return int(tool["exit"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
