"""Whatever the input, loading gives a bundle or a BundleValidationError, never a crash."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.bundle import BundleValidationError, from_document, load_bytes
from tests.policy.kit import BASE

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
SPEC_KEYS = [
    "servers",
    "tenants",
    "agents",
    "budgets",
    "rules",
    "tests",
    "defaultDecision",
    "failureMode",
    "bogus",
]


def check(doc: Any) -> None:
    try:
        from_document(doc)
    except BundleValidationError as exc:
        assert exc.issues and all(str(i) for i in exc.issues)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(SPEC_KEYS), json_values, max_size=4))
def test_any_spec_shape_is_either_valid_or_explained(spec: dict[str, Any]) -> None:
    check(
        {
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "PolicyBundle",
            "metadata": {"name": "x"},
            "spec": spec,
        }
    )


@settings(max_examples=200, deadline=None)
@given(
    section=st.sampled_from(["servers", "tenants", "agents", "rules", "tests"]),
    items=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "id",
                    "tools",
                    "risk",
                    "decision",
                    "match",
                    "when",
                    "call",
                    "expect",
                    "tenant",
                    "gpuQuota",
                    "rate",
                    "repeat",
                ]
            ),
            json_values,
            max_size=5,
        ),
        max_size=3,
    ),
)
def test_any_list_items_are_either_valid_or_explained(section: str, items: list[Any]) -> None:
    doc = yaml.safe_load(BASE)
    doc["spec"].setdefault(section, []).extend(items)
    check(doc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_either_valid_or_explained(text: str) -> None:
    try:
        load_bytes(text, "fuzz.yaml")
    except BundleValidationError as exc:
        assert all(str(i).startswith("fuzz.yaml") for i in exc.issues)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(BASE) - 1), st.sampled_from(["", ":", "-", "[", "{", "'", " ", "\n"]))
def test_a_damaged_bundle_file_is_explained(at: int, junk: str) -> None:
    try:
        load_bytes(BASE[:at] + junk + BASE[at + 1 :], "fuzz.yaml")
    except BundleValidationError as exc:
        assert exc.issues


def test_an_alias_bomb_is_refused_not_expanded() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 9):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    try:
        load_bytes("\n".join(lines) + "\n", "bomb.yaml")
    except BundleValidationError as exc:
        assert "more than 200000 values" in str(exc)
    else:
        raise AssertionError("an alias bomb loaded")


def test_absurd_nesting_is_refused() -> None:
    try:
        load_bytes("[" * 5000 + "]" * 5000, "deep.yaml")
    except BundleValidationError as exc:
        assert "nested too deeply" in str(exc)
    else:
        raise AssertionError("absurd nesting loaded")
