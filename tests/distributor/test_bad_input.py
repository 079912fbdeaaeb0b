"""Malformed or hostile client input gets a clear error and never takes a replica down."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from palisade.v1 import distribution_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import cli, eventually, make_client

SUBSCRIBE = "/palisade.v1.DistributionService/Subscribe"
SEND_AUDIT = "/palisade.v1.DistributionService/SendAudit"


def raw(b: bytes) -> bytes:
    return b


def hello(**identity: str) -> bytes:
    ident = distribution_pb2.ClientIdentity(**identity)  # type: ignore[arg-type]
    req = distribution_pb2.SubscribeRequest(hello=distribution_pb2.Hello(identity=ident))
    return bytes(req.SerializeToString())


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([b"\xff\xff\xff not protobuf"], "Hello"),
        ([hello()], "Hello with an id"),
        (
            [
                distribution_pb2.SubscribeRequest(
                    ack=distribution_pb2.Ack(revision=1)
                ).SerializeToString()
            ],
            "Hello",
        ),
        ([hello(id="x" * 5000)], "longer than"),
        ([hello(id="ok\x00")], "control characters"),
        ([hello(id="fine"), b"\xff\xff\xff garbage after hello"], "malformed"),
    ],
)
async def test_a_bad_stream_is_refused_with_invalid_argument_and_the_replica_keeps_serving(
    fleet: Fleet, messages: list[bytes], expected: str
) -> None:
    replica = fleet.start("r0")
    async with grpc.aio.insecure_channel(replica.target) as channel:
        call = channel.stream_stream(SUBSCRIBE, request_serializer=raw, response_deserializer=raw)()
        for m in messages:
            await call.write(m)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            while True:
                if await call.read() is grpc.aio.EOF:
                    break
        assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (exc.value.details() or "")
        audit = channel.unary_unary(SEND_AUDIT, request_serializer=raw, response_deserializer=raw)
        with pytest.raises(grpc.aio.AioRpcError) as exc2:
            await audit(b"\xff\xff\xff", timeout=5)
        assert exc2.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert replica.proc.poll() is None
    client, _ = make_client(fleet.tmp, "good", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "a good client still served")
    finally:
        await client.stop()


def test_the_distributor_refuses_to_start_without_a_usable_signing_key(tmp_path: Path) -> None:
    out = cli("distributor", "--policy-dir", str(tmp_path), "--store", str(tmp_path / "s.db"))
    assert out.returncode == 2 and "--signing-key is required" in out.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    out = cli(
        "distributor",
        "--policy-dir",
        str(tmp_path),
        "--store",
        str(tmp_path / "s.db"),
        "--signing-key",
        str(bad),
        "--grpc-listen",
        "127.0.0.1:0",
    )
    assert out.returncode == 1 and "distributor failed" in out.stderr
    assert "not a key" not in out.stderr, "key material never echoed"
