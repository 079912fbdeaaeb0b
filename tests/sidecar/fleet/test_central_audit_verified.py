"""The distributor verifies audit records on intake, and its copy verifies after the pod is gone.

A real distributor process, real sidecar processes in front of the example MCP
server, raw gRPC calls for what an attacker would send, and the real CLI.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
from typing import Any

import grpc
import pytest

from palisade.audit import Signer, load_signer, to_proto
from palisade.audit.keys import registration_proof
from palisade.audit.record import chain, line_of, sign
from palisade.v1 import audit_pb2, distribution_pb2, distribution_pb2_grpc
from tests.distributor.signed_audit import Chain
from tests.harness.peers import get_json

from .conftest import SidecarProc, World, acli, until
from .test_audit_shipping import make_calls, stored_seqs

pytestmark = pytest.mark.e2e

R = distribution_pb2


async def send(world: World, records: list[audit_pb2.AuditRecord]) -> R.AuditBatchAck:
    async with grpc.aio.insecure_channel(world.distributor.target) as channel:
        stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
        batch = R.AuditBatch(identity=R.ClientIdentity(id="someone"), records=records)
        ack: R.AuditBatchAck = await stub.SendAudit(batch, timeout=10)
        return ack


async def register(world: World, *keys: R.AuditKey) -> R.RegisterAuditKeyResponse:
    async with grpc.aio.insecure_channel(world.distributor.target) as channel:
        stub = distribution_pb2_grpc.DistributionServiceStub(channel)  # type: ignore[no-untyped-call]
        req = R.RegisterAuditKeyRequest(identity=R.ClientIdentity(id="someone"), keys=keys)
        resp: R.RegisterAuditKeyResponse = await stub.RegisterAuditKey(req, timeout=10)
        return resp


def intake(world: World) -> dict[str, Any]:
    _, doc = get_json(world.distributor.url + "/v1/audit/intake")
    return dict(doc)


async def shipped(world: World, sc: SidecarProc) -> list[dict[str, Any]]:
    """``sc``'s local records, once the distributor stores every one of them."""
    local = sc.audit()

    async def all_stored() -> bool:
        return await stored_seqs(world, sc.source) == [r["seq"] for r in local]

    await until(all_stored, what=f"every record of {sc.source} stored")
    return local


def continuing(last: dict[str, Any], signer: Signer, *, key_id: str = "") -> dict[str, Any]:
    """A record after ``last`` in its chain, signed by ``signer`` (naming ``key_id``)."""
    content = {k: v for k, v in last.items() if k not in ("seq", "prev_hash", "hash", "key_id")}
    content.pop("signature", None)
    content["reason"] = "forged"
    chained = chain(
        content, seq=last["seq"] + 1, prev_hash=last["hash"], key_id=key_id or signer.key_id
    )
    line_of(chained, sign(chained, signer))
    return chained.record


async def test_records_not_signed_by_the_senders_registered_key_are_refused(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    assert await make_calls(sc, 1) == (1, 1)
    local = await shipped(world, sc)
    before = await stored_seqs(world, sc.source)

    # signed by a key nobody registered for this source
    ack = await send(world, [to_proto(continuing(local[-1], Signer.generate()))])
    assert ack.refused.reason == R.AUDIT_REFUSAL_UNKNOWN_KEY
    assert (ack.stored_count, ack.refused.seq) == (0, local[-1]["seq"] + 1)
    # naming the sidecar's registered key, signed by another
    forged = continuing(local[-1], Signer.generate(), key_id=local[-1]["key_id"])
    ack = await send(world, [to_proto(forged)])
    assert ack.refused.reason == R.AUDIT_REFUSAL_BAD_SIGNATURE, ack
    assert "not signed by its key" in ack.refused.message

    assert await stored_seqs(world, sc.source) == before
    assert intake(world)["refused"] == {"unknown_key": 1, "bad_signature": 1}
    # the sidecar's own records keep going in
    assert await make_calls(sc, 1) == (1, 1)
    await shipped(world, sc)


async def test_a_record_signed_with_another_clients_key_is_refused(world: World) -> None:
    a, b = world.start_sidecar("sc-a"), world.start_sidecar("sc-b")
    for sc in (a, b):
        await world.ready(sc, revision=1)
        assert await make_calls(sc, 1) == (1, 1)
    await shipped(world, a)
    local_b = await shipped(world, b)
    key_a = load_signer(a.audit_path.parent / "audit-key.pem")  # as if stolen from sc-a

    ack = await send(world, [to_proto(continuing(local_b[-1], key_a))])
    assert ack.refused.reason == R.AUDIT_REFUSAL_UNKNOWN_KEY
    assert "not registered for this client" in ack.refused.message
    # nor can sc-a's key be registered for sc-b, even with a valid proof
    stolen = R.AuditKey(
        key_id=key_a.key_id, source=b.source, proof=registration_proof(key_a, b.source)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await register(world, stolen)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "registered for another source" in str(refused.value.details())
    # and a key without proof of possession is refused outright
    no_proof = R.AuditKey(key_id=Signer.generate().key_id, source=b.source, proof=b"x" * 64)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await register(world, no_proof)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await stored_seqs(world, b.source) == [r["seq"] for r in local_b]


async def test_a_broken_chain_is_refused_at_the_first_bad_record(world: World) -> None:
    good = Chain("sidecar/payments/tester")
    await register(world, good.key())
    first = good.protos(3)
    ack = await send(world, first)
    assert (ack.stored_count, ack.stored_through_seq, ack.HasField("refused")) == (3, 3, False)

    # prev_hash pointing elsewhere
    broken = Chain(good.source, good.signer)
    broken.seq, broken.head = good.seq, "sha256:" + "0" * 64
    ack = await send(world, broken.protos(1))
    assert ack.refused.reason == R.AUDIT_REFUSAL_CHAIN_BROKEN
    # a record missing before this one
    gap = Chain(good.source, good.signer)
    gap.seq, gap.head = good.seq + 1, good.head
    ack = await send(world, gap.protos(1))
    assert ack.refused.reason == R.AUDIT_REFUSAL_GAP
    # history rewritten: another record 2 after the stored record 1
    fork = Chain(good.source, good.signer)
    fork.seq, fork.head = 1, first[0].hash
    ack = await send(world, fork.protos(1, reason="rewritten"))
    assert ack.refused.reason == R.AUDIT_REFUSAL_CONFLICT
    # edited after signing
    edited = good.protos(1)[0]
    good.seq, good.head = good.seq - 1, first[-1].hash  # not sent: take it back
    edited.reason = "edited"
    ack = await send(world, [edited])
    assert ack.refused.reason == R.AUDIT_REFUSAL_EDITED
    # a valid record first, then a bad one: the good prefix is stored, the rest held back
    batch = good.protos(1) + broken.protos(1)
    ack = await send(world, batch)
    assert (ack.stored_count, ack.stored_through_seq) == (1, 4)
    assert ack.refused.reason == R.AUDIT_REFUSAL_CHAIN_BROKEN
    # a chain that does not start at seq 1
    late = Chain("sidecar/payments/late")
    await register(world, late.key())
    late.seq, late.head = 4, "sha256:" + "1" * 64
    ack = await send(world, late.protos(1))
    assert ack.refused.reason == R.AUDIT_REFUSAL_BAD_START

    assert await stored_seqs(world, good.source) == [1, 2, 3, 4]
    assert await stored_seqs(world, late.source) == []
    refused = intake(world)["refused"]
    assert refused == {"chain_broken": 2, "gap": 1, "conflict": 1, "edited": 1, "bad_start": 1}


async def test_a_replay_of_stored_records_is_not_stored_again_and_the_sender_is_told(
    world: World,
) -> None:
    c = Chain("sidecar/payments/replayer")
    await register(world, c.key())
    records = c.protos(3)
    assert (await send(world, records)).stored_count == 3
    for replay in (records, records[:1], [records[1], records[1]]):
        ack = await send(world, replay)
        assert (ack.stored_count, ack.already_stored) == (len(replay), len(replay))
        assert not ack.HasField("refused")
    assert intake(world)["already_stored"] == 6
    assert await stored_seqs(world, c.source) == [1, 2, 3]
    # the replayed seq 1 did not start a second chain: the chain goes on from seq 3
    _, doc = get_json(world.distributor.url + "/v1/audit/chains")
    assert [(x["chain"], x["records"]) for x in doc["chains"] if x["source"] == c.source] == [
        (1, 3)
    ]
    assert (await send(world, c.protos(1))).stored_through_seq == 4


async def test_a_real_sidecar_keeps_refused_records_in_its_spool_and_logs_why(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    assert await make_calls(sc, 1) == (1, 1)
    await shipped(world, sc)
    world.distributor.stop()
    assert await make_calls(sc, 2) == (2, 2)

    async def spooled() -> bool:
        link = sc.readyz()[1]["distributor"]
        return bool(link["audit_spool_bytes"] > 0 and link["audit_behind"] == 0)

    await until(spooled, what="records waiting in the spool")
    sc.proc.send_signal(signal.SIGKILL)
    sc.proc.wait(10)
    # someone edits a record waiting in the spool
    spool = sc.audit_path.parents[1] / "state" / "distribution" / "audit"
    from palisade.distribution import AuditSpool

    records, _ = AuditSpool(spool).read_entries(1000)
    assert len(records) >= 3
    records[2].reason = "nothing to see here"
    (spool / "records").unlink()
    (spool / "cursor").unlink(missing_ok=True)
    AuditSpool(spool).append(records)

    world.distributor.start()
    world.restart_sidecar(sc)
    await world.ready(sc, revision=1)

    async def logged() -> bool:
        return "audit records refused by the distributor" in sc.log_path.read_text()

    await until(logged, what="the refusal in the sidecar's log")
    line = next(
        json.loads(x)
        for x in sc.log_path.read_text().splitlines()
        if "audit records refused by the distributor" in x
    )
    assert (line["reason"], line["seq"]) == ("AUDIT_REFUSAL_EDITED", records[2].seq)
    stored = await stored_seqs(world, sc.source)
    assert stored[-1] == records[1].seq, "the records before the edited one are stored"
    assert sc.readyz()[1]["distributor"]["audit_spool_bytes"] > 0, "the rest stays in the spool"


async def test_after_the_pod_is_gone_the_central_copy_verifies_and_catches_tampering(
    world: World,
) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    assert await make_calls(sc, 3) == (3, 3)
    local = await shipped(world, sc)
    sc.proc.send_signal(signal.SIGTERM)
    assert sc.proc.wait(30) == 0
    shutil.rmtree(sc.audit_path.parents[1])  # the pod and its volumes are gone

    url = world.distributor.url
    out = await acli("audit", "verify", "--distributor", url, "--source", sc.source)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"OK {url}/{sc.source}#1: {len(local)} record(s)" in out.stdout
    assert "1 registered key(s)" in out.stdout

    # an edit of the stored copy is found
    db = sqlite3.connect(world.tmp / "distributor.db")
    blob = db.execute("SELECT record FROM audit WHERE source=? AND seq=2", (sc.source,)).fetchone()[
        0
    ]
    rec = audit_pb2.AuditRecord.FromString(blob)
    rec.reason = "rewritten later"
    db.execute(
        "UPDATE audit SET record=? WHERE source=? AND seq=2", (rec.SerializeToString(), sc.source)
    )
    db.commit()
    db.close()
    out = await acli("audit", "verify", "--distributor", url, "--source", sc.source)
    assert out.returncode == 1, out.stdout
    assert "(seq 2): record edited" in out.stdout


async def test_sigterm_drains_the_spool_to_the_distributor(world: World) -> None:
    sc = world.start_sidecar("sc-1")
    await world.ready(sc, revision=1)
    world.distributor.stop()
    assert await make_calls(sc, 5) == (5, 5)

    async def spooled() -> bool:
        link = sc.readyz()[1]["distributor"]
        return bool(link["audit_spool_bytes"] > 0 and link["audit_behind"] == 0)

    await until(spooled, what="records waiting in the spool")
    await asyncio.sleep(3.0)  # the sidecar backs off reconnecting
    world.distributor.start()
    sc.proc.send_signal(signal.SIGTERM)  # at once: the pod is being deleted
    assert await asyncio.to_thread(sc.proc.wait, 30) == 0
    local = sc.audit()
    assert len(local) == 15
    assert await stored_seqs(world, sc.source) == [r["seq"] for r in local]
    spool = sc.audit_path.parents[1] / "state" / "distribution" / "audit" / "records"
    assert not await asyncio.to_thread(spool.exists), "nothing left in the spool"
