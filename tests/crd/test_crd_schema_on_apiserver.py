"""The generated CRD on a real kube-apiserver: kubectl explain, server-side validation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.crd.apiserver import as_resource, base_path, install_crd
from tests.crd.corpus import INVALID, Invalid, accepted_documents, base, edge
from tests.harness import ApiError, ControlPlane

pytestmark = pytest.mark.e2e

NS = "crd-schema"


@pytest.fixture(scope="module")
def kube_crd(kube: ControlPlane) -> Iterator[ControlPlane]:
    install_crd(kube)
    kube.create_namespace(NS)
    try:
        yield kube
    finally:
        kube.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def dry_create(kube: ControlPlane, resource: dict[str, Any]) -> Any:
    return kube.request("POST", base_path(NS) + "?dryRun=All&fieldValidation=Strict", resource)


def test_kubectl_explain_describes_the_rules(kube_crd: ControlPlane) -> None:
    out = kube_crd.kubectl("explain", "policybundle.spec.rules").stdout
    assert "Policy rules, evaluated in order" in out
    for field in ("approvers", "decision", "id", "match", "reason", "retryAfterSeconds", "when"):
        assert re.search(rf"^\s+{field}\s", out, re.M), f"{field} missing:\n{out}"
    assert "only a require_approval rule has approvers" not in out  # rules are not fields
    assert re.search(r"^\s+id\s+<string> -required-", out, re.M), out
    assert (
        "'registry' and 'failure' are reserved"
        in kube_crd.kubectl("explain", "pb.spec.rules.id").stdout
    )
    deep = kube_crd.kubectl("explain", "policybundle.spec.rules.match.risk").stdout
    assert "Risk classes." in deep
    quota = kube_crd.kubectl("explain", "policybundle.spec.tenants.gpuQuota.enforcement").stdout
    assert "evict the pod" in quota and "ENUM" in quota.upper()


def test_the_openapi_v3_document_carries_the_descriptions(kube_crd: ControlPlane) -> None:
    # What kubectl explain reads: the group-version document under /openapi/v3.
    index = kube_crd.request("GET", "/openapi/v3")
    doc = kube_crd.request("GET", index["paths"]["apis/palisade.dev/v1alpha1"]["serverRelativeURL"])
    schema = doc["components"]["schemas"]["dev.palisade.v1alpha1.PolicyBundle"]
    rules = schema["properties"]["spec"]["properties"]["rules"]
    assert rules["description"].startswith("Policy rules, evaluated in order")
    assert rules["x-kubernetes-list-type"] == "map"
    item = rules["items"]
    assert "require_approval" in item["properties"]["decision"]["enum"]
    assert item["properties"]["approvers"]["maximum"] == 10


@pytest.mark.parametrize(
    ("where", "doc"),
    [*accepted_documents(), edge(), ("BASE", base())],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_bundle_the_validator_accepts_the_api_server_accepts(
    kube_crd: ControlPlane, where: str, doc: dict[str, Any]
) -> None:
    created = dry_create(kube_crd, as_resource(doc, NS, "probe"))
    # Nothing pruned or defaulted; the API server drops nulls (the validator's "not set").
    assert created["spec"] == without_nulls(doc["spec"])


def without_nulls(value: Any, key: str = "") -> Any:
    if key == "arguments":
        return value  # free-form JSON: kept as written
    if isinstance(value, dict):
        return {k: without_nulls(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


SPEC_CASES = [c for c in INVALID if c.spec_only]


@pytest.mark.parametrize("case", SPEC_CASES, ids=[c.name for c in SPEC_CASES])
def test_a_broken_spec_is_refused_by_the_api_server(kube_crd: ControlPlane, case: Invalid) -> None:
    doc = case.document()
    name = doc["metadata"]["name"] if case.field == "metadata.name" else "probe"
    with pytest.raises(ApiError) as info:
        dry_create(kube_crd, as_resource(doc, NS, name))
    # 400: strict decoding (an unknown field); 422: the schema or a CEL rule.
    assert info.value.status in (400, 422), info.value.body
    message = info.value.body["message"]
    assert case.field in message, message
    if case.cel_message:
        assert case.cel_message in message, message


def test_duplicate_rule_ids_are_refused_by_the_api_server(kube_crd: ControlPlane) -> None:
    doc = base()
    doc["spec"]["rules"].append({"id": "reads", "decision": "deny"})
    with pytest.raises(ApiError) as info:
        dry_create(kube_crd, as_resource(doc, NS, "probe"))
    assert info.value.status == 422
    assert 'spec.rules[2]: Duplicate value: {"id":"reads"}' in info.value.body["message"]
