"""A written chain verifies; every kind of tampering is found and located."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from palisade.audit import AuditWriter, Signer, verify_files
from palisade.audit.record import chain_hash

from .conftest import entry


async def _write(path: Path, signer: Signer, n: int) -> list[dict[str, object]]:
    w = AuditWriter(path, signer, fsync="never")
    await w.start()
    records = [await w.append(entry(i)) for i in range(n)]
    await w.aclose()
    return records


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


async def test_an_untouched_chain_verifies_with_its_trusted_key(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "a.jsonl"
    records = await _write(path, signer, 5)
    res = verify_files([path], trusted=[signer.public], expect_head=str(records[-1]["hash"]))
    assert res.ok, res.findings
    assert (res.records, res.first_seq, res.last_seq) == (5, 1, 5)
    assert records[0]["prev_hash"] == ""
    assert records[1]["prev_hash"] == records[0]["hash"]


async def test_an_edited_field_is_found_at_its_line_and_seq(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 5)
    lines = _lines(path)
    rec = json.loads(lines[2])
    rec["decision"] = "deny"
    lines[2] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    res = verify_files([path])
    assert not res.ok
    [f] = res.findings
    assert (f.file, f.line, f.seq) == (str(path), 3, 3)
    assert "edited" in f.message


async def test_an_edit_with_a_recomputed_hash_fails_its_signature_and_breaks_the_chain(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 4)
    lines = _lines(path)
    rec = json.loads(lines[1])
    rec["reason"] = "nothing to see"
    rec["hash"] = chain_hash(rec)
    lines[1] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    messages = [(f.line, f.message) for f in verify_files([path]).findings]
    assert messages[0][0] == 2 and "bad signature" in messages[0][1]
    assert messages[1][0] == 3 and "chain broken" in messages[1][1]


async def test_a_removed_record_is_reported_as_missing_seq(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 5)
    lines = _lines(path)
    del lines[2]
    path.write_text("".join(lines))
    [f] = verify_files([path]).findings
    assert (f.line, f.seq) == (3, 4)
    assert "removed" in f.message and "seq 3 missing" in f.message


async def test_reordered_records_are_reported_out_of_order(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 5)
    lines = _lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_text("".join(lines))
    findings = verify_files([path]).findings
    assert any(f.line == 3 and f.seq == 2 and "out of order" in f.message for f in findings)
    assert all(f.file == str(path) for f in findings)


async def test_a_truncated_last_record_is_reported(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    [f] = verify_files([path]).findings
    assert f.line == 3 and "truncated" in f.message


async def test_removing_records_from_the_end_is_caught_by_the_expected_head(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "a.jsonl"
    records = await _write(path, signer, 4)
    path.write_text("".join(_lines(path)[:3]))
    assert verify_files([path]).ok  # a shorter chain is self-consistent...
    res = verify_files([path], expect_head=str(records[-1]["hash"]))
    assert "removed from the end" in res.findings[0].message  # ...but not the one we know


async def test_an_inserted_forged_record_is_found(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    records = await _write(path, signer, 3)
    forger = Signer.generate()
    fake = dict(records[1])
    fake["seq"] = 3
    fake["prev_hash"] = records[1]["hash"]
    fake["reason"] = "inserted"
    fake["key_id"] = forger.key_id
    fake["hash"] = chain_hash(fake)
    fake["signature"] = base64.b64encode(forger.sign(str(fake["hash"]).encode())).decode()
    lines = _lines(path)
    lines.insert(2, json.dumps(fake) + "\n")
    path.write_text("".join(lines))
    res = verify_files([path], trusted=[signer.public])
    assert any(f.line == 3 and "untrusted key" in f.message for f in res.findings)
    assert any(f.line == 4 and "out of order" in f.message for f in res.findings)


async def test_a_bad_signature_is_found(tmp_path: Path, signer: Signer) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 2)
    lines = _lines(path)
    rec = json.loads(lines[0])
    sig = bytearray(base64.b64decode(rec["signature"]))
    sig[0] ^= 1
    rec["signature"] = base64.b64encode(bytes(sig)).decode()
    lines[0] = json.dumps(rec) + "\n"
    path.write_text("".join(lines))
    [f] = verify_files([path]).findings
    assert (f.line, f.seq) == (1, 1) and "bad signature" in f.message


async def test_a_chain_signed_by_another_key_fails_against_the_trusted_key(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, Signer.generate(), 2)
    res = verify_files([path], trusted=[signer.public])
    assert [f.seq for f in res.findings] == [1, 2]
    assert all("untrusted key" in f.message for f in res.findings)


async def test_a_chain_missing_its_start_is_refused_unless_partial_is_allowed(
    tmp_path: Path, signer: Signer
) -> None:
    path = tmp_path / "a.jsonl"
    await _write(path, signer, 3)
    path.write_text("".join(_lines(path)[1:]))
    assert "records 1..1 missing" in verify_files([path]).findings[0].message
    assert verify_files([path], allow_partial_start=True).ok


async def test_garbage_lines_and_empty_files_are_reported_not_crashed_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('not json\n{"seq": 1}\n[1, 2]\n')
    msgs = [f.message for f in verify_files([bad]).findings]
    assert "not valid JSON" in msgs[0]
    assert "missing" in msgs[1] and "missing" in msgs[2]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "no audit records" in verify_files([empty]).findings[0].message
