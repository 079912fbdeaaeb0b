"""Properties of the boundary: whatever goes in, only pattern-true identifiers come out."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from sidecar.quarantine.extract import extract_kubernetes
from sidecar.quarantine.facts import (
    ERROR_KINDS,
    IMAGE_REF,
    NAMESPACE,
    OBJECT_NAME,
    POD_STATUSES,
    error_type,
    render,
    timestamp,
    validate,
)
from sidecar.quarantine.redact import REDACTED, _key_values, key_values_by_regex, scrub

from .samples import DESCRIBE, EVENTS, GET_PODS, POD_LOG

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=40,
)
keys = st.sampled_from(
    ["errors", "pods", "images", "deploys", "exitCodes", "window", "lines", "type", "name"]
)
fact_like = st.dictionaries(keys, json_values, max_size=8)


def assert_only_valid_values(facts: dict[str, Any]) -> None:
    for e in facts.get("errors", []):
        assert error_type(e["type"]) == e["type"] and e["count"] >= 1
    for p in facts.get("pods", []):
        assert OBJECT_NAME.fullmatch(p["name"])
        assert "namespace" not in p or NAMESPACE.fullmatch(p["namespace"])
        assert "status" not in p or p["status"] in POD_STATUSES | ERROR_KINDS
    for ref in facts.get("images", []):
        assert IMAGE_REF.fullmatch(ref)
    for d in facts.get("deploys", []):
        assert OBJECT_NAME.fullmatch(d["name"])
        assert "at" not in d or timestamp(d["at"]) == d["at"]
    for code in facts.get("exitCodes", []):
        assert 0 <= code <= 255
    for ts in facts.get("window", {}).values():
        assert timestamp(ts) == ts


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


@given(st.one_of(json_values, fact_like))
def test_validate_never_raises_and_keeps_only_valid_values(candidate: Any) -> None:
    checked = validate(candidate)
    assert_only_valid_values(checked.facts)
    assert all(not any(c.isspace() for c in s) for s in strings_in(checked.facts))
    render(checked.facts)


@given(
    st.lists(st.sampled_from([POD_LOG, GET_PODS, DESCRIBE, EVENTS]), max_size=3),
    st.text(max_size=300),
    st.integers(min_value=0, max_value=10_000),
)
def test_any_text_yields_only_whitespace_free_identifiers(
    parts: list[str], prose: str, at: int
) -> None:
    text = "".join(parts)
    at = at % (len(text) + 1)
    text = text[:at] + prose + text[at:]
    facts = validate(extract_kubernetes(text)).facts
    assert_only_valid_values(facts)
    for s in strings_in(facts):
        assert not any(c.isspace() for c in s)
        assert len(s) <= 255


PIECES = [*"abcxyzAKIJ:= \"'_-.\n", "password", "token", "Bearer ", "eyJ", "[REDACTED]"]
secretish = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@given(st.one_of(st.text(max_size=400), secretish))
def test_scrubbing_is_idempotent_and_never_raises(text: str) -> None:
    once, n = scrub(text)
    assert (REDACTED in once) == (n > 0) or REDACTED in text
    assert scrub(once) == (once, 0)


KV_PIECES = [
    *"aZ_.-:= \"'\t\n,;}]",
    "password",
    "PASSWD",
    "token",
    "api_key",
    "secret-key",
    "client-key-data",
    "credentials",
    "monkey",
    "[REDACTED]",
]


@given(st.lists(st.sampled_from(KV_PIECES), max_size=40).map("".join))
def test_the_fast_key_value_scan_matches_the_reference_regex(text: str) -> None:
    assert _key_values(text, text.lower()) == key_values_by_regex(text)
