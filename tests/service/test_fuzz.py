"""Whatever arrives, the answer is a decision or INVALID_ARGUMENT, and the server lives."""

from __future__ import annotations

import random

import grpc
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.service.convert import BadRequest, Limits, call_from_request
from palisade.v1 import policy_pb2

from .conftest import Served

_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
_name = st.text(max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    agent=_name,
    server=_name,
    tool=_name,
    session=_name,
    risk=st.integers(-5, 10),
    args=st.dictionaries(st.text(max_size=10), _json, max_size=5),
    labels=st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=5),
)
def test_conversion_returns_a_bounded_call_or_a_bad_request(
    agent: str,
    server: str,
    tool: str,
    session: str,
    risk: int,
    args: dict[str, object],
    labels: dict[str, str],
) -> None:
    req = policy_pb2.CheckRequest(
        agent=agent, server=server, tool=tool, session=session, labels=labels
    )
    req.server_declared_risk = risk  # type: ignore[assignment]
    req.arguments.update(args)
    limits = Limits()
    try:
        call = call_from_request(req, limits)
    except BadRequest as exc:
        assert str(exc)
        return
    for value in (call.agent, call.server, call.tool):
        assert value.strip() and len(value) <= limits.max_name_length
        assert not any(ord(c) < 32 for c in value)


async def test_random_bytes_get_a_decision_or_invalid_argument(served: Served) -> None:
    rng = random.Random(20261121)  # deterministic
    raw = served.channel.unary_unary("/palisade.v1.PolicyService/Check")
    valid = policy_pb2.CheckRequest(agent="a", server="s", tool="t").SerializeToString()
    codes = set()
    for i in range(200):
        if i % 2:
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            payload = bytes(data)
        else:
            payload = rng.randbytes(rng.randint(0, 64))
        try:
            await raw(payload)
            codes.add(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as err:
            codes.add(err.code())
    assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes
    ok = policy_pb2.CheckRequest(
        agent="sre-agent-payments", server="kubernetes-mcp", server_version="1.0", tool="pods_log"
    )
    resp = await served.stub.Check(ok)
    assert resp.decision == policy_pb2.DECISION_ALLOW
