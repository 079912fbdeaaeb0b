"""Every failure path answers a well-formed AdmissionReview carrying the request UID."""

from __future__ import annotations

from typing import Any

import pytest

from injector import admission
from injector.settings import InjectionSettings
from tests.injector.pods import ENABLED, pod, review

SETTINGS = InjectionSettings()


def assert_well_formed(answer: Any, uid: str, allowed: bool) -> None:
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == uid
    assert answer["response"]["allowed"] is allowed
    if not allowed:
        assert answer["response"]["status"]["message"]


def broken(mutate: Any) -> dict[str, Any]:
    doc = review(pod())
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "uid", "fragment"),
    [
        ("not an object", "", "not a JSON object"),
        ([1, 2], "", "not a JSON object"),
        ({}, "", "expected AdmissionReview"),
        (
            broken(lambda d: d.update(apiVersion="admission.k8s.io/v1beta1")),
            "0d1e2f3a-uid",
            "expected",
        ),
        (broken(lambda d: d.update(kind="Pod")), "0d1e2f3a-uid", "expected AdmissionReview"),
        (broken(lambda d: d.pop("request")), "", "no request"),
        (broken(lambda d: d["request"].pop("uid")), "", "no uid"),
        (broken(lambda d: d["request"].pop("kind")), "0d1e2f3a-uid", "no kind"),
        (
            broken(lambda d: d["request"].update(operation="PATCH")),
            "0d1e2f3a-uid",
            "unknown operation",
        ),
        (broken(lambda d: d["request"].update(object=[1])), "0d1e2f3a-uid", "not a JSON object"),
        (broken(lambda d: d["request"].pop("object")), "0d1e2f3a-uid", "no pod object"),
        (broken(lambda d: d["request"]["object"].pop("spec")), "0d1e2f3a-uid", "no spec"),
        (
            broken(lambda d: d["request"]["object"]["spec"].update(containers=[])),
            "0d1e2f3a-uid",
            "no containers",
        ),
        (
            broken(lambda d: d["request"]["object"]["spec"].update(containers="x")),
            "0d1e2f3a-uid",
            "no containers",
        ),
    ],
)
def test_malformed_reviews_are_refused_with_the_uid_and_a_reason(
    doc: Any, uid: str, fragment: str
) -> None:
    answer = admission.serve(doc, ENABLED, SETTINGS)
    assert_well_formed(answer, uid, allowed=False)
    assert fragment in answer["response"]["status"]["message"]


def test_a_review_of_another_kind_is_allowed_untouched() -> None:
    answer = admission.serve(review({"metadata": {}}, kind="Deployment"), ENABLED, SETTINGS)
    assert_well_formed(answer, "0d1e2f3a-uid", allowed=True)
    assert "patch" not in answer["response"]


def test_an_injection_answer_carries_a_json_patch() -> None:
    answer = admission.serve(review(pod()), ENABLED, SETTINGS)
    assert_well_formed(answer, "0d1e2f3a-uid", allowed=True)
    assert answer["response"]["patchType"] == "JSONPatch"
    assert "injected" in answer["response"]["auditAnnotations"]
