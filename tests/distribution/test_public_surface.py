"""The client library's public surface is pinned: the sidecar and node agent import it."""

import palisade.distribution as dist


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(dist.__all__) == [
        "ActiveBundle",
        "ApprovalBook",
        "AuditSpool",
        "Backoff",
        "ClientSettings",
        "DistributionClient",
        "State",
        "Status",
        "TrustedKeys",
        "call_digest",
    ]
    for name in dist.__all__:
        assert getattr(dist, name) is not None
