"""The fleet wiring's parts, in process: approvals settled from a real ApprovalBook, audit
moved by a real ShippingWriter into a real AuditSpool, identity, keys and flags."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from palisade.audit import AuditWriter, Entry, Signer
from palisade.distribution import ApprovalBook, AuditSpool, call_digest
from palisade.policy.types import Call, Decision, Verdict
from palisade.v1 import distribution_pb2
from sidecar import fleet
from sidecar.main import register, settings_from
from sidecar.settings import DistributorSettings

from .conftest import write_keypair

# -- approvals ----------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


CALL = Call(
    agent="sre-agent",
    server="kubernetes-mcp",
    tool="resources_create_or_update",
    arguments={"name": "payments-api", "replicas": 2},
    session="s-1",
)
HELD = Verdict(
    Decision.REQUIRE_APPROVAL,
    "writes-need-approval",
    "a human approves every write",
    7,
    "sha256:abc",
    tenant="payments",
    approval_id="apr-0123",
)


def digest_of(call: Call) -> str:
    return call_digest(
        agent=call.agent,
        server=call.server,
        tool=call.tool,
        arguments=call.arguments,
        session=call.session,
    )


def answer(
    book: ApprovalBook,
    approval_id: str,
    call: Call,
    *,
    approved: bool,
    at: float,
    by: str = "alice",
) -> None:
    dec = distribution_pb2.ApprovalDecision(
        approval_id=approval_id,
        approved=approved,
        by=by,
        comment="checked",
        call_digest=digest_of(call),
    )
    dec.expires.FromNanoseconds(int(at * 1e9))
    book.record(dec)


def desk(clock: Clock) -> tuple[fleet.Approvals, ApprovalBook, list[int]]:
    book = ApprovalBook(clock=clock)
    woken: list[int] = []
    return (
        fleet.Approvals(book, denial_window_s=60, clock=clock, on_request=lambda: woken.append(1)),
        book,
        woken,
    )


def test_a_held_call_is_asked_for_once_while_nobody_answered() -> None:
    approvals, _, woken = desk(Clock())
    first, details = approvals.settle(CALL, HELD, frozenset({"name"}))
    again, _ = approvals.settle(CALL, HELD, frozenset({"name"}))
    assert first.decision is Decision.REQUIRE_APPROVAL
    assert first.approval_id.startswith("apr-0123-") and again.approval_id == first.approval_id
    assert details == {"approval": "requested"}
    assert woken == [1]
    [req] = approvals.unsent()
    assert req.approval_id == first.approval_id
    assert req.call_digest == digest_of(CALL)
    assert (req.rule_id, req.tenant) == ("writes-need-approval", "payments")
    assert req.call.arguments["name"] == "[REDACTED]"  # secret arguments never leave
    assert req.call.arguments["replicas"] == 2
    approvals.mark_sent(req.approval_id)
    assert approvals.unsent() == []
    approvals.resend_all()  # after a reconnect
    assert [r.approval_id for r in approvals.unsent()] == [req.approval_id]


def test_an_approved_call_is_allowed_once_with_the_approval_in_the_verdict() -> None:
    clock = Clock()
    approvals, book, _ = desk(clock)
    asked, _ = approvals.settle(CALL, HELD, frozenset())
    answer(book, asked.approval_id, CALL, approved=True, at=clock.now + 300, by="alice")
    allowed, details = approvals.settle(CALL, HELD, frozenset())
    assert allowed.decision is Decision.ALLOW
    assert (allowed.rule_id, allowed.approval_id) == ("writes-need-approval", asked.approval_id)
    assert allowed.reason == "approved by alice: checked"
    assert details == {"approval": "granted", "approved_by": "alice"}
    after, _ = approvals.settle(CALL, HELD, frozenset())
    assert after.decision is Decision.REQUIRE_APPROVAL
    assert after.approval_id != asked.approval_id


def test_an_approval_does_not_cover_other_arguments_or_another_session() -> None:
    clock = Clock()
    approvals, book, _ = desk(clock)
    asked, _ = approvals.settle(CALL, HELD, frozenset())
    answer(book, asked.approval_id, CALL, approved=True, at=clock.now + 300)
    other_args = replace(CALL, arguments={"name": "payments-api", "replicas": 20})
    other_session = replace(CALL, session="s-2")
    for other in (other_args, other_session):
        verdict, _ = approvals.settle(other, HELD, frozenset())
        assert verdict.decision is Decision.REQUIRE_APPROVAL
    assert approvals.settle(CALL, HELD, frozenset())[0].decision is Decision.ALLOW


def test_an_expired_approval_is_not_honoured_and_the_call_is_asked_for_again() -> None:
    clock = Clock()
    approvals, book, _ = desk(clock)
    asked, _ = approvals.settle(CALL, HELD, frozenset())
    answer(book, asked.approval_id, CALL, approved=True, at=clock.now + 300)
    clock.now += 301
    late, _ = approvals.settle(CALL, HELD, frozenset())
    assert late.decision is Decision.REQUIRE_APPROVAL
    assert late.approval_id != asked.approval_id
    assert [r.approval_id for r in approvals.unsent()] == [late.approval_id]


def test_a_denial_is_answered_as_a_denial_for_its_window_then_asked_again() -> None:
    clock = Clock()
    approvals, book, _ = desk(clock)
    asked, _ = approvals.settle(CALL, HELD, frozenset())
    answer(book, asked.approval_id, CALL, approved=False, at=clock.now, by="bob")
    denied, details = approvals.settle(CALL, HELD, frozenset())
    assert denied.decision is Decision.DENY
    assert denied.approval_id == asked.approval_id
    assert denied.rule_id == "writes-need-approval"
    assert "denied by bob: checked" in denied.reason
    assert details == {"approval": "denied", "denied_by": "bob"}
    clock.now += 59
    assert approvals.settle(CALL, HELD, frozenset())[0].decision is Decision.DENY
    clock.now += 2
    fresh, _ = approvals.settle(CALL, HELD, frozenset())
    assert fresh.decision is Decision.REQUIRE_APPROVAL
    assert fresh.approval_id != asked.approval_id


# -- audit shipping -----------------------------------------------------------------------


def entry(i: int) -> Entry:
    return Entry(agent="sre-agent", server="kubernetes-mcp", tool=f"t{i}", decision="allow")


def writer_at(path: Path) -> fleet.ShippingWriter:
    w = fleet.ShippingWriter(path, Signer.generate(), source="sidecar/test", fsync="never")
    w.open()
    return w


def spooled_seqs(spool: AuditSpool) -> list[int]:
    records, _ = spool.read_batch(10_000)
    return [r.seq for r in records]


async def test_written_records_go_to_the_spool_in_order_and_the_cursor_is_kept(
    tmp_path: Path,
) -> None:
    w = writer_at(tmp_path / "audit.jsonl")
    spool = AuditSpool(tmp_path / "spool")
    shipper = fleet.AuditShipper(w, spool)
    for i in range(3):
        w.append_sync(entry(i))
    for i in range(3, 5):
        await w.append(entry(i))
    assert await shipper.pump() == 5
    assert spooled_seqs(spool) == [1, 2, 3, 4, 5]
    assert w.shipped_through == 5
    assert await shipper.pump() == 0
    [first] = spool.read_batch(1)[0]
    assert (first.source, first.tool, first.decision) == ("sidecar/test", "t0", 1)
    assert first.hash == w.read_after(0, 1)[0]["hash"]
    w.close()


async def test_a_record_the_tap_missed_is_read_back_from_the_audit_log(tmp_path: Path) -> None:
    w = writer_at(tmp_path / "audit.jsonl")
    spool = AuditSpool(tmp_path / "spool")
    clock = Clock(0.0)
    shipper = fleet.AuditShipper(w, spool, gap_grace_s=1.0, clock=clock)
    w.append_sync(entry(0))
    AuditWriter.append_sync(w, entry(1))  # written, but not through the tap
    w.append_sync(entry(2))
    assert await shipper.pump() == 1  # seq 1; then a gap at 2
    assert await shipper.pump() == 0  # the gap is young: maybe the tap is late
    clock.now = 1.5
    assert await shipper.pump() == 2
    assert spooled_seqs(spool) == [1, 2, 3]
    assert w.shipped_through == 3
    w.close()


async def test_a_full_spool_leaves_records_in_the_audit_log_until_it_drains(
    tmp_path: Path,
) -> None:
    w = writer_at(tmp_path / "audit.jsonl")
    spool = AuditSpool(tmp_path / "spool")
    shipper = fleet.AuditShipper(w, spool, max_spool_bytes=1, gap_grace_s=0.0)
    w.append_sync(entry(0))
    assert await shipper.pump() == 1  # under the limit before, over it after
    for i in range(1, 4):
        w.append_sync(entry(i))
    assert await shipper.pump() == 0
    assert shipper.behind == 3 and w.shipped_through == 1
    _, offset = spool.read_batch(100)
    spool.commit(offset)  # the distributor stored it
    assert await shipper.pump() == 3  # read back from the audit log
    assert spooled_seqs(spool) == [2, 3, 4]
    w.close()


async def test_after_a_restart_unshipped_records_are_spooled_and_shipped_ones_are_not(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    spool = AuditSpool(tmp_path / "spool")
    w = writer_at(path)
    for i in range(3):
        w.append_sync(entry(i))
    assert await fleet.AuditShipper(w, spool).pump() == 3
    _, offset = spool.read_batch(100)
    spool.commit(offset)
    for i in range(3, 6):
        w.append_sync(entry(i))  # written; the process dies before they are spooled
    w.close()

    again = writer_at(path)
    shipper = fleet.AuditShipper(again, AuditSpool(tmp_path / "spool"))
    assert shipper.cursor == 3
    assert await shipper.pump(from_disk=True) == 3
    assert spooled_seqs(spool) == [4, 5, 6]
    again.close()


# -- identity, keys, flags -------------------------------------------------------------------


def dsettings(**kw: Any) -> DistributorSettings:
    base: dict[str, Any] = {
        "targets": ("d:9401",),
        "trusted_keys": (),
        "state_dir": Path("/tmp"),
        "client_id": "uid-1",
    }
    return DistributorSettings(**{**base, **kw})


def test_the_hello_names_a_sidecar_with_its_pod_and_server() -> None:
    ident = fleet.identity_of(
        dsettings(pod="p", namespace="payments", node="n1", tenant="payments"), "kubernetes-mcp"
    )
    assert ident.kind == distribution_pb2.CLIENT_KIND_SIDECAR
    assert (ident.id, ident.pod, ident.namespace, ident.node, ident.tenant, ident.server) == (
        "uid-1",
        "p",
        "payments",
        "n1",
        "payments",
        "kubernetes-mcp",
    )


def test_the_client_id_is_the_pod_uid_else_namespace_and_pod_else_host_and_port() -> None:
    assert fleet.default_client_id({"pod_uid": "u", "pod": "p"}, "s", 1) == "u"
    assert fleet.default_client_id({"pod": "p", "namespace": "ns"}, "s", 1) == "ns/p"
    assert fleet.default_client_id({}, "s", 9000).endswith(":9000/s")


def test_trusted_keys_come_from_files_directories_or_inline_pem_and_a_bad_one_is_named(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_keypair(keys / "a.key")
    write_keypair(keys / "b.key")
    assert len(fleet.load_trusted([str(keys)])) == 2
    inline = (keys / "a.pub.pem").read_text()
    from_file = fleet.load_trusted([str(keys / "a.pub.pem")])
    assert fleet.load_trusted([inline]).key_ids == from_file.key_ids
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nc2VjcmV0LW1hdGVyaWFs\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError) as err:
        fleet.load_trusted([str(bad)])
    assert str(bad) in str(err.value) and "c2VjcmV0" not in str(err.value)
    with pytest.raises(ValueError, match="no trusted key"):
        fleet.load_trusted([])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser)
    return parser.parse_args(["--upstream", "http://127.0.0.1:1", "--server-name", "s", *argv])


def test_the_distributor_flag_and_its_environment_variable_fill_the_fleet_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PALISADE_DISTRIBUTOR", "d1:9401,d2:9401")
    monkeypatch.setenv("PALISADE_POD_NAME", "pod-a")
    monkeypatch.setenv("PALISADE_POD_NAMESPACE", "payments")
    monkeypatch.setenv("PALISADE_POD_UID", "uid-a")
    monkeypatch.setenv("PALISADE_NODE_NAME", "node-1")
    monkeypatch.setenv("PALISADE_TENANT", "payments")
    s = settings_from(parse("--trusted-key", "k.pem", "--state-dir", str(tmp_path)))
    d = s.distributor
    assert d is not None
    assert d.targets == ("d1:9401", "d2:9401")
    assert (d.client_id, d.pod, d.namespace, d.node, d.tenant) == (
        "uid-a",
        "pod-a",
        "payments",
        "node-1",
        "payments",
    )
    assert d.state_dir == tmp_path and d.trusted_keys == ("k.pem",)
    monkeypatch.delenv("PALISADE_DISTRIBUTOR")
    assert settings_from(parse()).distributor is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bundle", "b.yaml", "--trusted-key", "k", "--state-dir", "s"], "not both"),
        (["--state-dir", "s"], "--trusted-key"),
        (["--trusted-key", "k"], "--state-dir"),
    ],
)
def test_contradictory_or_missing_fleet_flags_stop_at_start(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        settings_from(parse("--distributor", "d:9401", *argv))
    assert message in str(stop.value)


def rotated_writer_missing_its_oldest_file(tmp_path: Path) -> fleet.ShippingWriter:
    w = fleet.ShippingWriter(
        tmp_path / "audit.jsonl", Signer.generate(), fsync="never", max_bytes=200
    )
    w.open()
    for i in range(4):
        w.append_sync(entry(i))
    w.drain()  # as after a restart: nothing tapped
    rotated = sorted(p for p in tmp_path.iterdir() if p.name.startswith("audit.jsonl."))
    assert rotated, "expected rotated files"
    rotated[0].unlink()  # the oldest records are gone from disk
    return w


async def test_records_gone_from_the_log_are_reported_and_shipping_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = rotated_writer_missing_its_oldest_file(tmp_path)
    spool = AuditSpool(tmp_path / "spool")
    shipper = fleet.AuditShipper(w, spool)
    while await shipper.pump(from_disk=True):
        pass
    seqs = spooled_seqs(spool)
    assert seqs[0] > 1 and seqs == list(range(seqs[0], 5))
    assert "audit records missing from the log" in caplog.text
    w.close()


def test_the_fleet_package_exposes_what_main_and_the_proxy_use() -> None:
    assert sorted(fleet.__all__) == [
        "Approvals",
        "AuditShipper",
        "ShippingWriter",
        "SidecarFleet",
        "check_request_of",
        "default_client_id",
        "identity_of",
        "key_files",
        "load_trusted",
    ]


def test_held_requests_survive_a_restart_until_used(tmp_path: Path) -> None:
    state = tmp_path / "approvals.json"
    clock = Clock()
    first = fleet.Approvals(ApprovalBook(clock=clock), clock=clock, state_file=state)
    held, _ = first.settle(CALL, HELD, frozenset({"name"}))
    assert state.stat().st_mode & 0o777 == 0o600  # the call's (redacted) arguments are in it

    book = ApprovalBook(clock=clock)
    again = fleet.Approvals(book, clock=clock, state_file=state)  # the restarted sidecar
    [req] = again.unsent()  # asked again once the stream is back
    assert req.approval_id == held.approval_id and req.call_digest == digest_of(CALL)
    assert req.call.arguments["name"] == "[REDACTED]"
    answer(book, held.approval_id, CALL, approved=True, at=clock.now + 60)
    allowed, _ = again.settle(CALL, HELD, frozenset({"name"}))
    assert allowed.decision is Decision.ALLOW and allowed.approval_id == held.approval_id
    assert fleet.Approvals(ApprovalBook(clock=clock), state_file=state).unsent() == []


def test_a_damaged_state_file_costs_only_the_requests_in_it(tmp_path: Path) -> None:
    state = tmp_path / "approvals.json"
    state.write_text('{"asked": [{"request": "not base64 protobuf!"}]')
    approvals = fleet.Approvals(ApprovalBook(), state_file=state)
    assert approvals.unsent() == []
    held, _ = approvals.settle(CALL, HELD, frozenset())
    assert held.decision is Decision.REQUIRE_APPROVAL  # works, and rewrites the file
    assert len(fleet.Approvals(ApprovalBook(), state_file=state).unsent()) == 1
