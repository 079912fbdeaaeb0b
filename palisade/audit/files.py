"""On-disk layout of an audit log: the active file, its rotated siblings, small helpers.

``audit.jsonl`` is the file being written; rotation renames it to
``audit.jsonl.000001``, ``audit.jsonl.000002``... (higher is newer) and starts a
new one. ``audit.jsonl.shipped`` holds the shipping cursor, and a torn tail
found at start-up is kept in ``audit.jsonl.torn-<unix time>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def rotated_files(active: Path) -> list[tuple[int, Path]]:
    """Rotated siblings of ``active`` as (index, path), oldest first."""
    out: list[tuple[int, Path]] = []
    prefix = active.name + "."
    if not active.parent.is_dir():
        return out
    for p in active.parent.iterdir():
        if p.name.startswith(prefix):
            suffix = p.name[len(prefix) :]
            if suffix.isdigit() and p.is_file():
                out.append((int(suffix), p))
    out.sort()
    return out


def chain_files(active: Path) -> list[Path]:
    """Every file of the log in chain order: rotated ones oldest first, then the active one."""
    files = [p for _, p in rotated_files(active)]
    if active.exists():
        files.append(active)
    return files


def last_line(path: Path, chunk: int = 65536) -> bytes | None:
    """The last newline-terminated line of ``path`` (without the newline), or None."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        end = f.tell()
        if end == 0:
            return None
        pos = end
        buf = b""
        while pos > 0:
            step = min(chunk, pos)
            pos -= step
            f.seek(pos)
            buf = f.read(step) + buf
            # a complete last line needs the newline before it (or start of file)
            body = buf[:-1] if buf.endswith(b"\n") else buf
            idx = body.rfind(b"\n")
            if idx >= 0:
                return body[idx + 1 :] if buf.endswith(b"\n") else None
        return buf[:-1] if buf.endswith(b"\n") else None


def iter_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each line of ``path``; raises ValueError on a bad line."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            record = json.loads(raw)
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: not a JSON object")
            yield lineno, record


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
