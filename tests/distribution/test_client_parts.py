"""The client library's parts: status machine, backoff, last-known-good, audit spool, approvals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from palisade.distribution import ApprovalBook, AuditSpool, Backoff, State, Status, call_digest
from palisade.distribution import status as st
from palisade.distribution.lkg import LastKnownGood
from palisade.v1 import audit_pb2, bundle_pb2, distribution_pb2


class TestStatusMachine:
    def test_a_new_client_is_not_ready(self) -> None:
        assert Status().state is State.NOT_READY and not Status().ready

    def test_activation_makes_it_ready(self) -> None:
        s = st.activated(Status(), 3, "sha256:a")
        assert s.ready and (s.revision, s.digest) == (3, "sha256:a")

    def test_a_rejected_bundle_keeps_a_ready_client_ready_and_notes_the_error(self) -> None:
        s = st.rejected(st.activated(Status(), 3, "d"), "bad signature")
        assert s.state is State.OK and s.revision == 3 and s.last_error == "bad signature"

    def test_a_client_with_nothing_that_is_handed_a_bad_bundle_is_in_error(self) -> None:
        s = st.rejected(Status(), "bad")
        assert s.state is State.ERROR and not s.ready

    def test_a_good_bundle_after_an_error_clears_it(self) -> None:
        s = st.activated(st.rejected(Status(), "bad"), 1, "d")
        assert s.state is State.OK and s.last_error == ""


class TestBackoff:
    def test_delays_grow_exponentially_up_to_the_cap(self) -> None:
        b = Backoff(base_s=0.5, cap_s=8.0)
        assert [b.delay(a, lambda: 1.0) for a in range(6)] == [0.5, 1, 2, 4, 8, 8]

    def test_full_jitter_draws_between_zero_and_the_ceiling(self) -> None:
        b = Backoff(base_s=1.0, cap_s=10.0)
        assert b.delay(3, lambda: 0.0) == 0.0
        assert b.delay(3, lambda: 0.25) == 2.0

    def test_huge_attempt_numbers_do_not_overflow(self) -> None:
        assert Backoff(cap_s=5).delay(10_000, lambda: 1.0) == 5


class TestLastKnownGood:
    def test_a_saved_bundle_loads_back_byte_for_byte(self, tmp_path: Path) -> None:
        lkg = LastKnownGood(tmp_path / "state" / "bundle.pb")
        assert lkg.load() is None
        b = bundle_pb2.SignedBundle(revision=7, digest="sha256:x", document=b"{}")
        lkg.save(b)
        assert lkg.load() == b
        assert [p.name for p in (tmp_path / "state").iterdir()] == ["bundle.pb"], "no temp left"

    def test_saving_replaces_the_previous_bundle(self, tmp_path: Path) -> None:
        lkg = LastKnownGood(tmp_path / "bundle.pb")
        lkg.save(bundle_pb2.SignedBundle(revision=1))
        lkg.save(bundle_pb2.SignedBundle(revision=2))
        loaded = lkg.load()
        assert loaded is not None and loaded.revision == 2


def _records(a: int, b: int) -> list[audit_pb2.AuditRecord]:
    return [audit_pb2.AuditRecord(seq=i, source="s", hash=f"h{i}") for i in range(a, b)]


class TestAuditSpool:
    def test_records_are_read_in_order_in_bounded_batches(self, tmp_path: Path) -> None:
        spool = AuditSpool(tmp_path)
        spool.append(_records(1, 11))
        batch, offset = spool.read_batch(4)
        assert [r.seq for r in batch] == [1, 2, 3, 4]
        spool.commit(offset)
        batch, offset = spool.read_batch(100)
        assert [r.seq for r in batch] == list(range(5, 11))

    def test_uncommitted_records_survive_a_restart(self, tmp_path: Path) -> None:
        spool = AuditSpool(tmp_path)
        spool.append(_records(1, 6))
        _, offset = spool.read_batch(2)
        spool.commit(offset)
        again = AuditSpool(tmp_path)
        assert [r.seq for r in again.read_batch(100)[0]] == [3, 4, 5]

    def test_committing_everything_resets_the_files(self, tmp_path: Path) -> None:
        spool = AuditSpool(tmp_path)
        spool.append(_records(1, 4))
        _, offset = spool.read_batch(100)
        spool.commit(offset)
        assert spool.size() == 0 and spool.cursor() == 0 and spool.pending_bytes() == 0
        spool.append(_records(4, 6))
        assert [r.seq for r in spool.read_batch(100)[0]] == [4, 5]

    def test_a_torn_last_record_is_left_for_later_not_misread(self, tmp_path: Path) -> None:
        spool = AuditSpool(tmp_path)
        spool.append(_records(1, 3))
        with open(spool.records_path, "ab") as fh:
            fh.write(b"\x00\x00\x00\x50abc")  # a record whose write was cut short
        batch, _ = spool.read_batch(100)
        assert [r.seq for r in batch] == [1, 2]


class TestApprovals:
    def test_the_call_digest_binds_every_argument(self) -> None:
        a = call_digest(agent="a", server="s", tool="t", arguments={"x": 1, "y": [1, 2]})
        b = call_digest(agent="a", server="s", tool="t", arguments={"y": [1, 2], "x": 1})
        c = call_digest(agent="a", server="s", tool="t", arguments={"x": 2, "y": [1, 2]})
        assert a == b != c

    def test_an_approval_is_used_once_and_only_for_its_call(self) -> None:
        now = [1000.0]
        book = ApprovalBook(clock=lambda: now[0])
        d = distribution_pb2.ApprovalDecision(approval_id="1", approved=True, call_digest="d1")
        d.expires.FromSeconds(1300)
        book.record(d)
        assert book.consume("d2") is None
        assert book.consume("d1") is not None
        assert book.consume("d1") is None

    def test_an_expired_approval_lets_nothing_through(self) -> None:
        now = [1000.0]
        book = ApprovalBook(clock=lambda: now[0])
        d = distribution_pb2.ApprovalDecision(approval_id="1", approved=True, call_digest="d1")
        d.expires.FromSeconds(1300)
        book.record(d)
        now[0] = 1301.0
        assert book.consume("d1") is None

    def test_a_denial_is_never_consumed_as_an_approval(self) -> None:
        book = ApprovalBook()
        book.record(distribution_pb2.ApprovalDecision(approval_id="1", call_digest="d1"))
        assert book.consume("d1") is None

    async def test_a_waiter_is_woken_by_the_answer(self) -> None:
        book = ApprovalBook()
        waiter = asyncio.create_task(book.wait("9"))
        await asyncio.sleep(0)
        book.record(distribution_pb2.ApprovalDecision(approval_id="9", approved=True))
        async with asyncio.timeout(1):
            assert (await waiter).approved


@pytest.mark.parametrize("bad", [b"not a protobuf \xff\xff", b"\x08"])
def test_a_corrupt_last_known_good_file_is_ignored_by_the_client(
    tmp_path: Path, bad: bytes
) -> None:
    from palisade.bundle import TrustedKeys, generate_key
    from palisade.distribution import ClientSettings, DistributionClient

    (tmp_path / "bundle.pb").write_bytes(bad)
    client = DistributionClient(
        ClientSettings(["127.0.0.1:1"], tmp_path, TrustedKeys([generate_key().public_key()])),
        distribution_pb2.ClientIdentity(id="x"),
        lambda b: None,
    )
    assert client.load_last_known_good() is False
    assert client.status.state in (State.NOT_READY, State.ERROR)
    assert client.active is None
