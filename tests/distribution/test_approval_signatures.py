"""Approval answers are signed by the distributor and believed only when a trusted key signed
them: an approval lets a held call through, so whoever can reach the stream must not be able
to forge one (the in-cluster gRPC stream has no TLS unless configured)."""

from __future__ import annotations

from pathlib import Path

import pytest

from palisade.bundle.signing import TrustedKeys, generate_key
from palisade.distribution import ApprovalBook
from palisade.distribution.approvals import sign_decision, verify_decision
from palisade.distribution.client import ClientSettings, DistributionClient
from palisade.v1 import distribution_pb2

KEY = generate_key()
TRUSTED = TrustedKeys([KEY.public_key()])


def decision(**fields: object) -> distribution_pb2.ApprovalDecision:
    d = distribution_pb2.ApprovalDecision(
        approval_id="apr-1", approved=True, by="alice", comment="ok", call_digest="sha256:aa"
    )
    d.expires.FromNanoseconds(1_800_000_000 * 10**9)
    for name, value in fields.items():
        setattr(d, name, value)
    return d


def test_a_signed_answer_verifies() -> None:
    assert verify_decision(sign_decision(decision(), [KEY]), TRUSTED) == ""


@pytest.mark.parametrize(
    "field, value",
    [
        ("approved", False),
        ("approval_id", "apr-2"),
        ("call_digest", "sha256:bb"),
        ("by", "mallory"),
        ("comment", "changed"),
    ],
)
def test_any_changed_field_breaks_the_signature(field: str, value: object) -> None:
    signed = sign_decision(decision(), [KEY])
    setattr(signed, field, value)
    assert "no valid signature" in verify_decision(signed, TRUSTED)


def test_a_moved_expiry_breaks_the_signature() -> None:
    signed = sign_decision(decision(), [KEY])
    signed.expires.FromNanoseconds(1_900_000_000 * 10**9)
    assert "no valid signature" in verify_decision(signed, TRUSTED)


def test_unsigned_untrusted_and_keyless_answers_are_refused() -> None:
    assert "signatures by: none" in verify_decision(decision(), TRUSTED)
    other = sign_decision(decision(), [generate_key()])
    assert "no valid signature" in verify_decision(other, TRUSTED)
    assert verify_decision(sign_decision(decision(), [KEY]), TrustedKeys()) == (
        "no trusted keys configured"
    )


async def test_the_client_records_only_signed_answers(tmp_path: Path) -> None:
    settings = ClientSettings(targets=["127.0.0.1:1"], state_dir=tmp_path, trusted=TRUSTED)
    identity = distribution_pb2.ClientIdentity(id="sc")
    # the answers expire at 1.8e9 s: a clock before that, whatever the day the test runs
    client = DistributionClient(settings, identity, lambda b: None, clock=lambda: 1.7e9)
    book: ApprovalBook = client.approvals

    forged = distribution_pb2.SubscribeResponse(approval=decision(approval_id="forged"))
    await client._handle(forged)
    assert book.get("forged") is None and client.approvals_refused == 1

    signed = distribution_pb2.SubscribeResponse(approval=sign_decision(decision(), [KEY]))
    await client._handle(signed)
    assert book.consume("sha256:aa") is not None and client.approvals_refused == 1
