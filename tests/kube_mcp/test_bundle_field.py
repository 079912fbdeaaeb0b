"""``agents[].clusterCredential``: parsed, checked, and canonical only when set."""

from __future__ import annotations

import pytest

from palisade.bundle import canonical
from palisade.bundle.errors import BundleValidationError
from palisade.bundle.load import load_bytes, load_file
from tests.kube_mcp.server import REPO

EXAMPLE = REPO / "examples/payments-bundle.yaml"
SET = "clusterCredential: {serviceAccount: payments/sre-agent-payments}"


def with_credential(value: str) -> bytes:
    text = EXAMPLE.read_text()
    assert SET in text
    return text.replace(SET, value).encode()


def test_the_example_names_the_agents_own_service_account() -> None:
    bundle = load_file(EXAMPLE)
    sre, indexer = bundle.agents
    assert sre.cluster_credential is not None
    assert sre.cluster_credential.username == "system:serviceaccount:payments:sre-agent-payments"
    assert (sre.cluster_credential.namespace, sre.cluster_credential.name) == (
        "payments",
        "sre-agent-payments",
    )
    assert indexer.cluster_credential is None


@pytest.mark.parametrize(
    "ref", ["payments", "Payments/sre", "payments/sre_agent", "payments/", "/sre", "a/b\n"]
)
def test_anything_but_namespace_slash_name_is_refused(ref: str) -> None:
    with pytest.raises(BundleValidationError, match=r"clusterCredential\.serviceAccount"):
        load_bytes(with_credential(f"clusterCredential: {{serviceAccount: {ref!r}}}"), "b.yaml")


def test_an_unknown_field_in_it_is_refused() -> None:
    bad = with_credential("clusterCredential: {serviceAccount: payments/x, token: abc}")
    with pytest.raises(BundleValidationError, match="token"):
        load_bytes(bad, "b.yaml")


def test_it_survives_the_canonical_form_and_is_absent_when_not_set() -> None:
    bundle = load_file(EXAMPLE)
    again = canonical.from_document(canonical.to_document(bundle))
    assert again.agents[0].cluster_credential == bundle.agents[0].cluster_credential
    assert canonical.bundle_digest(again) == canonical.bundle_digest(bundle)
    without = load_bytes(with_credential(""), "b.yaml")
    doc = canonical.to_document(without)
    assert all("clusterCredential" not in a for a in doc["spec"]["agents"])
    assert canonical.bundle_digest(without) != canonical.bundle_digest(bundle)
