"""The sample bundle in docs/bundle-format.md lints and its tests pass."""

from __future__ import annotations

import re
from pathlib import Path

from palisade.bundle import load_bytes
from palisade.policy.bundletests import run_tests

DOC = Path(__file__).parents[2] / "docs" / "bundle-format.md"


def test_the_documented_sample_bundle_is_valid_and_its_tests_pass() -> None:
    match = re.search(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert match is not None
    bundle = load_bytes(match.group(1), "bundle-format.md")
    results = run_tests(bundle)
    assert results and all(r.passed for r in results), [r.problem for r in results]
