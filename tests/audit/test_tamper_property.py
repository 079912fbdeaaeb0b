"""Property: whatever single change is made to a written chain, verification fails."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import tempfile
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from palisade.audit import AuditWriter, Signer, verify_files

from .conftest import entry

N = 12
FIELDS = ["agent", "tool", "decision", "rule_id", "reason", "seq", "prev_hash", "time", "arguments"]


@functools.cache
def _chain() -> tuple[list[str], Signer]:
    signer = Signer.generate()
    tmp = tempfile.mkdtemp(prefix="pal-audit-")
    path = Path(tmp) / "a.jsonl"

    async def write() -> None:
        async with AuditWriter(path, signer, fsync="never") as w:
            await asyncio.gather(*(w.append(entry(i)) for i in range(N // 2)))  # a batch
            for i in range(N // 2):
                await w.append(entry(100 + i))  # batches of one

    asyncio.run(write())
    lines = path.read_text().splitlines(keepends=True)
    shutil.rmtree(tmp)
    return lines, signer


_values = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.none(), st.booleans())
_edit = st.tuples(st.just("edit"), st.integers(0, N - 1), st.sampled_from(FIELDS), _values)
_delete = st.tuples(st.just("delete"), st.integers(0, N - 1), st.none(), st.none())
_swap = st.tuples(st.just("swap"), st.integers(0, N - 2), st.none(), st.none())
_dup = st.tuples(st.just("duplicate"), st.integers(0, N - 1), st.none(), st.none())
_cut = st.tuples(st.just("truncate"), st.integers(1, 200), st.none(), st.none())


@settings(max_examples=150, deadline=None)
@given(st.one_of(_edit, _delete, _swap, _dup, _cut))
def test_any_single_change_to_the_chain_is_detected(
    change: tuple[str, int, object, object],
) -> None:
    original, signer = _chain()
    lines = list(original)
    kind, i, name, value = change
    if kind == "edit":
        record = json.loads(lines[i])
        assume(record[name] != value)
        record[name] = value
        lines[i] = json.dumps(record) + "\n"
    elif kind == "delete":
        del lines[i]
    elif kind == "swap":
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    else:
        text = "".join(lines)
        lines = [text[: len(text) - i]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.jsonl"
        path.write_text("".join(lines))
        result = verify_files([path], trusted=[signer.public], expect_head=_head(original))
    assert not result.ok, change
    assert all(f.file == str(path) for f in result.findings)


def _head(lines: list[str]) -> str:
    return str(json.loads(lines[-1])["hash"])


def test_the_untouched_chain_mixes_batched_and_single_records_and_verifies() -> None:
    lines, signer = _chain()
    records = [json.loads(line) for line in lines]
    assert sum(1 for r in records if not r["signature"]) == N // 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.jsonl"
        path.write_text("".join(lines))
        assert verify_files([path], trusted=[signer.public], expect_head=_head(lines)).ok
