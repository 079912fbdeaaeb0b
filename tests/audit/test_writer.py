"""The writer: concurrency, rotation without loss, restart, durability modes, shipping."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pytest

from palisade.audit import AuditError, AuditWriter, Signer, verify_files
from palisade.audit.files import chain_files

from .conftest import entry


def _all_records(active: Path) -> list[dict[str, object]]:
    out = []
    for p in chain_files(active):
        out += [json.loads(line) for line in p.read_text().splitlines()]
    return out


async def test_concurrent_writers_rotating_often_lose_and_interleave_nothing(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    w = AuditWriter(active, signer, max_bytes=4096, fsync="always")
    await w.start()

    async def worker(k: int) -> list[int]:
        seqs = []
        for i in range(50):
            rec = await w.append(entry(i, request_id=f"w{k}-{i}"))
            seqs.append(int(rec["seq"]))  # type: ignore[call-overload]
            if i % 7 == 0:
                await asyncio.sleep(0)
        return seqs

    results = await asyncio.gather(*(worker(k) for k in range(8)))
    await w.aclose()
    files = chain_files(active)
    assert len(files) > 5  # rotation really happened, many times
    records = _all_records(active)
    assert [r["seq"] for r in records] == list(range(1, 401))
    assert sorted(s for seqs in results for s in seqs) == list(range(1, 401))
    assert {r["request_id"] for r in records} == {f"w{k}-{i}" for k in range(8) for i in range(50)}
    res = verify_files(reversed(files), trusted=[signer.public])  # any order given
    assert res.ok, res.findings[:3]


def test_threads_appending_at_once_keep_one_chain(tmp_path: Path, signer: Signer) -> None:
    active = tmp_path / "audit.jsonl"
    w = AuditWriter(active, signer, max_bytes=8192, fsync="never")
    w.open()
    threads = [
        threading.Thread(target=lambda: [w.append_sync(entry(i)) for i in range(100)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert verify_files(chain_files(active)).records == 400
    assert verify_files(chain_files(active)).ok


async def test_a_restart_resumes_the_chain_from_the_last_record_on_disk(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        for i in range(3):
            await w.append(entry(i))
        head = w.head
    other_key = Signer.generate()  # a restart may also come with a rotated key
    async with AuditWriter(active, other_key, fsync="never") as w2:
        assert w2.head == head
        rec = await w2.append(entry(9))
    assert rec["seq"] == 4 and rec["prev_hash"] == head[1]
    res = verify_files([active], trusted=[signer.public, other_key.public])
    assert res.ok and res.records == 4


async def test_a_restart_right_after_rotation_continues_from_the_rotated_file(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, max_bytes=1, fsync="never") as w:
        await w.append(entry(1))  # rotates at once: active file is empty now
        head = w.head
    assert active.stat().st_size == 0
    async with AuditWriter(active, signer, fsync="never") as w2:
        assert w2.head == head
        await w2.append(entry(2))
    assert verify_files(chain_files(active)).ok


async def test_a_torn_last_line_is_moved_aside_and_a_recovery_record_written(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        await w.append(entry(1))
        await w.append(entry(2))
    with active.open("ab") as f:
        f.write(b'{"seq": 3, "half a rec')
    async with AuditWriter(active, signer, fsync="never") as w2:
        await w2.append(entry(3))
    records = _all_records(active)
    assert [r["kind"] for r in records] == ["decision", "decision", "recovery", "decision"]
    assert records[2]["details"]["torn_bytes"] == 22  # type: ignore[index]
    assert verify_files([active]).ok
    torn = list(tmp_path.glob("audit.jsonl.torn-*"))  # noqa: ASYNC240
    assert torn and torn[0].read_bytes().startswith(b'{"seq": 3')


async def test_a_garbled_last_record_stops_start_up_with_a_clear_error(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    active.write_text("this is not a record\n")
    w = AuditWriter(active, signer)
    with pytest.raises(AuditError, match="cannot resume the audit chain"):
        w.open()


async def test_appending_to_a_closed_writer_fails_closed(tmp_path: Path, signer: Signer) -> None:
    w = AuditWriter(tmp_path / "a.jsonl", signer)
    with pytest.raises(AuditError, match="not open"):
        w.append_sync(entry())


async def test_shipping_cursor_reads_pending_persists_and_prunes_only_shipped_files(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    w = AuditWriter(active, signer, max_bytes=2000, fsync="never")
    await w.start()
    for i in range(20):
        await w.append(entry(i))
    assert w.shipped_through == 0
    batch = w.read_after(0, limit=5)
    assert [r["seq"] for r in batch] == [1, 2, 3, 4, 5]
    w.mark_shipped(5)
    assert [r["seq"] for r in w.read_after(w.shipped_through, limit=3)] == [6, 7, 8]
    w.mark_shipped(3)  # never moves back
    assert w.shipped_through == 5
    with pytest.raises(ValueError, match="chain ends at 20"):
        w.mark_shipped(21)
    before = chain_files(active)
    removed = w.prune_shipped()
    remaining = _all_records(active)
    assert all(int(r["seq"]) > 0 for r in remaining)  # type: ignore[call-overload]
    assert min(int(r["seq"]) for r in remaining) <= 6  # type: ignore[call-overload]
    assert len(chain_files(active)) == len(before) - len(removed)
    await w.aclose()
    w2 = AuditWriter(active, signer)
    assert w2.shipped_through == 5  # the cursor survived a restart
    res = verify_files(chain_files(active), allow_partial_start=True)
    assert res.ok and res.last_seq == 20


async def test_interval_mode_fsyncs_in_the_background(tmp_path: Path, signer: Signer) -> None:
    w = AuditWriter(tmp_path / "a.jsonl", signer, fsync="interval", fsync_interval_s=0.01)
    await w.start()
    rec = await w.append(entry())
    for _ in range(100):
        if w._synced_seq >= rec["seq"]:  # type: ignore[operator]
            break
        await asyncio.sleep(0.01)
    assert w._synced_seq == 1
    await w.aclose()


async def test_concurrent_appends_share_one_write_and_one_signature_per_batch(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        first = await asyncio.gather(*(w.append(entry(i)) for i in range(10)))
        alone = await w.append(entry(99))
    signed = [bool(r["signature"]) for r in first]
    assert signed == [False] * 9 + [True]  # one batch, signed at its end
    assert alone["signature"]  # a batch of one is signed
    res = verify_files([active], trusted=[signer.public])
    assert res.ok and res.records == 11


async def test_a_log_ending_in_unsigned_records_is_reported(tmp_path: Path, signer: Signer) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        await asyncio.gather(*(w.append(entry(i)) for i in range(4)))
    lines = active.read_text().splitlines()
    del lines[-1]  # drop the signed record that closed the batch
    active.write_text("\n".join(lines) + "\n")
    [f] = verify_files([active]).findings
    assert (f.line, f.seq) == (1, 1)
    assert "unsigned tail: seqs 1..3" in f.message


async def test_an_edited_unsigned_record_is_caught_by_the_chain(
    tmp_path: Path, signer: Signer
) -> None:
    from palisade.audit.record import chain_hash

    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        await asyncio.gather(*(w.append(entry(i)) for i in range(4)))
    lines = active.read_text().splitlines()
    rec = json.loads(lines[1])
    assert rec["signature"] == ""
    rec["decision"] = "deny"
    rec["hash"] = chain_hash(rec)
    lines[1] = json.dumps(rec)
    active.write_text("\n".join(lines) + "\n")
    [f] = verify_files([active]).findings
    assert (f.line, f.seq) == (3, 3) and "chain broken" in f.message


async def test_a_failed_batch_write_fails_every_caller_and_rolls_the_chain_back(
    tmp_path: Path, signer: Signer
) -> None:
    import os

    active = tmp_path / "audit.jsonl"
    w = AuditWriter(active, signer, fsync="never")
    await w.start()
    one = await w.append(entry(1))
    good_fd = w._fd
    w._fd = os.open(os.devnull, os.O_RDONLY)  # the disk "fails": writes get EBADF
    results = await asyncio.gather(*(w.append(entry(i)) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, AuditError) for r in results)
    assert w.head == (1, one["hash"])
    os.close(w._fd)
    w._fd = good_fd
    two = await w.append(entry(2))
    assert (two["seq"], two["prev_hash"]) == (2, one["hash"])
    await w.aclose()
    assert verify_files([active]).ok


async def test_a_failing_rotation_keeps_every_record_in_the_active_file(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    (tmp_path / "audit.jsonl.000001").mkdir()  # the rename target is taken: rotation fails
    async with AuditWriter(active, signer, max_bytes=500, fsync="never") as w:
        for i in range(5):
            await w.append(entry(i))
    res = verify_files([active], trusted=[signer.public])
    assert res.ok and res.records == 5


async def test_a_cancelled_caller_does_not_fail_its_batch_and_its_record_is_kept(
    tmp_path: Path, signer: Signer
) -> None:
    active = tmp_path / "audit.jsonl"
    async with AuditWriter(active, signer, fsync="never") as w:
        tasks = [asyncio.ensure_future(w.append(entry(i, request_id=f"r{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # every task has joined the batch
        tasks[2].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r["seq"] for i, r in enumerate(results) if i != 2] == [1, 2, 4, 5]  # type: ignore[index]
    records = _all_records(active)
    assert [r["request_id"] for r in records] == ["r0", "r1", "r2", "r3", "r4"]
    assert verify_files([active]).ok


async def test_sign_each_signs_every_record_of_a_batch(tmp_path: Path, signer: Signer) -> None:
    async with AuditWriter(tmp_path / "a.jsonl", signer, fsync="never", sign_each=True) as w:
        records = await asyncio.gather(*(w.append(entry(i)) for i in range(5)))
    assert all(r["signature"] for r in records)
    assert verify_files([tmp_path / "a.jsonl"], trusted=[signer.public]).ok


async def test_a_shipment_never_ends_inside_a_group_commit(tmp_path: Path, signer: Signer) -> None:
    async with AuditWriter(tmp_path / "a.jsonl", signer, fsync="never") as w:
        await asyncio.gather(*(w.append(entry(i)) for i in range(6)))  # seqs 1..6, 6 signed
        await w.append(entry(7))
        shipment = w.read_after(0, limit=2)
    assert [r["seq"] for r in shipment] == [1, 2, 3, 4, 5, 6]
    assert shipment[-1]["signature"] and not shipment[0]["signature"]
    assert [r["seq"] for r in w.read_after(6, limit=1)] == [7]
