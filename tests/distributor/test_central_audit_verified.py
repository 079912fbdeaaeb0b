"""Audit keys and verified intake in both stores (SQLite, and a real PostgreSQL), and the
central copy verified by the CLI through a real distributor process on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from distributor.store import AuditRow, Store, StoreError
from palisade.audit import Signer
from palisade.audit.proto import from_proto
from palisade.v1 import audit_pb2, distribution_pb2, distribution_pb2_grpc
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import acli, eventually, make_client
from tests.distributor.signed_audit import Chain
from tests.distributor.test_postgres_store import PgCluster, pg, store  # noqa: F401

pytestmark = pytest.mark.e2e


def candidates(
    records: list[audit_pb2.AuditRecord], source: str
) -> list[tuple[dict[str, Any], AuditRow]]:
    return [
        (
            from_proto(r),
            AuditRow(
                source=source,
                seq=r.seq,
                hash=r.hash,
                time=1.0,
                kind=r.kind,
                agent=r.agent,
                tenant="",
                server="",
                tool=r.tool,
                decision="",
                rule_id="",
                record=r.SerializeToString(),
                json="{}",
            ),
        )
        for r in records
    ]


def test_audit_keys_are_kept_per_source_and_a_key_belongs_to_one_source(store: Store) -> None:  # noqa: F811
    a, b = Signer.generate(), Signer.generate()
    assert store.register_audit_keys("sidecar/a", [a.key_id], "a") == [a.key_id]
    assert store.register_audit_keys("sidecar/a", [a.key_id, b.key_id], "a") == [
        a.key_id,
        b.key_id,
    ]
    with pytest.raises(StoreError, match="registered for another source"):
        store.register_audit_keys("sidecar/b", [a.key_id], "b")
    assert [(k["source"], k["key_id"]) for k in store.audit_keys("sidecar/a")] == [
        ("sidecar/a", a.key_id),
        ("sidecar/a", b.key_id),
    ]
    assert store.audit_keys("sidecar/b") == []


def test_intake_verifies_in_both_stores_and_a_writer_that_lost_its_log_starts_chain_two(
    store: Store,  # noqa: F811
) -> None:
    c = Chain("sidecar/a")
    store.register_audit_keys(c.source, [c.signer.key_id], "a")
    first = c.protos(3)
    got = store.admit_audit(c.source, candidates(first, c.source))
    assert (got.verdict.stored_count, len(got.new), got.verdict.refused) == (3, 3, None)
    # a resend: nothing new, all counted as already stored
    got = store.admit_audit(c.source, candidates(first, c.source))
    assert (got.verdict.stored_count, len(got.new), len(got.verdict.duplicates)) == (3, 0, 3)
    # a broken link is refused, the head stays
    broken = Chain(c.source, c.signer)
    broken.seq, broken.head = 3, "sha256:" + "0" * 64
    got = store.admit_audit(c.source, candidates(broken.protos(1), c.source))
    assert got.verdict.refused is not None and got.verdict.refused.reason == "chain_broken"
    # an unregistered key is refused
    stranger = Chain(c.source)
    stranger.seq, stranger.head = c.seq, c.head
    got = store.admit_audit(c.source, candidates(stranger.protos(1), c.source))
    assert got.verdict.refused is not None and got.verdict.refused.reason == "unknown_key"
    # the writer lost its log (a new state dir) and starts again at seq 1 with a new key
    again = Chain(c.source)
    store.register_audit_keys(c.source, [again.signer.key_id], "a")
    got = store.admit_audit(c.source, candidates(again.protos(2), c.source))
    assert got.verdict.stored_count == 2 and [r.chain for r in got.new] == [2, 2]
    got = store.admit_audit(c.source, candidates(c.protos(1), c.source))
    assert got.verdict.refused is not None, "the old chain does not go on once a new one began"
    chains = [
        (x["chain"], x["records"], x["first_seq"], x["last_seq"]) for x in store.audit_chains()
    ]
    assert chains == [(1, 3, 1, 3), (2, 2, 1, 2)]
    blobs = store.audit_chain(c.source, 1, 1, 10)
    assert [audit_pb2.AuditRecord.FromString(b).seq for b in blobs] == [2, 3]


async def test_a_distributor_on_postgres_verifies_intake_and_its_copy_after_a_restart(
    fleet: Fleet,
    pg: PgCluster,  # noqa: F811
) -> None:
    dsn = await asyncio.to_thread(pg.new_database)
    r0 = fleet.start("r0", extra=["--audit-store", dsn])
    c = Chain("side")
    client, _ = make_client(fleet.tmp, "side", [r0.target], fleet.trusted, audit_keys=(c.key(),))
    await client.start()
    try:
        client.record_audit(c.protos(5, tool="pods_log", decision="allow"))
        await eventually(lambda: client.spool.pending_bytes() == 0, 15, "audit shipped")
        # a forged continuation of the chain, signed by another key
        forged = Chain("side")
        forged.seq, forged.head = c.seq, c.head
        async with grpc.aio.insecure_channel(r0.target) as channel:
            stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
            ack = await stub.SendAudit(
                distribution_pb2.AuditBatch(records=forged.protos(1)), timeout=10
            )
        assert ack.refused.reason == distribution_pb2.AUDIT_REFUSAL_UNKNOWN_KEY
    finally:
        await client.stop()
    r0.stop()
    # the client is gone; another replica on the same stores serves its records and keys
    r1 = fleet.start("r1", extra=["--audit-store", dsn])
    out = await acli("audit", "verify", "--distributor", r1.url, "--source", "side")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK {r1.url}/side#1: 5 record(s), seq 1..5, 1 registered key(s)" in out.stdout
