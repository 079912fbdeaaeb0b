"""The names the proxy and the entry point may use from ``sidecar.identity``."""

from __future__ import annotations

import sidecar.identity


def test_the_public_surface_is_pinned() -> None:
    assert sorted(sidecar.identity.__all__) == [
        "AuthError",
        "Authenticator",
        "DevAgent",
        "DevAuthenticator",
        "Forbidden",
        "IdentityMap",
        "IdentitySettings",
        "IdentityStack",
        "IssuerConfig",
        "MappingError",
        "Principal",
        "ResourceServer",
        "TokenReviewSettings",
        "Unauthenticated",
        "bearer_token",
        "discovered_cluster_issuer",
        "in_cluster_issuer",
        "metadata_paths",
        "metadata_url",
    ]
    for name in sidecar.identity.__all__:
        assert getattr(sidecar.identity, name) is not None


def test_http_statuses_are_fixed_by_the_error_class() -> None:
    from sidecar.identity import Forbidden, Unauthenticated

    assert Unauthenticated("r", "Bearer").status == 401
    assert Forbidden("r", "Bearer").status == 403
