"""The curated public surfaces of ``palisade.bundle`` and ``palisade.policy`` stay put."""

from __future__ import annotations

import palisade.bundle
import palisade.policy


def test_bundle_exports_are_pinned() -> None:
    assert set(palisade.bundle.__all__) >= {
        "Bundle",
        "BundleError",
        "BundleValidationError",
        "BundleVerificationError",
        "TrustedKeys",
        "bundle_digest",
        "canonical_bytes",
        "from_bytes",
        "from_document",
        "load_bytes",
        "load_dir",
        "load_file",
        "sign_bundle",
        "to_bytes",
        "to_document",
        "verify_bundle",
    }
    for name in palisade.bundle.__all__:
        assert getattr(palisade.bundle, name) is not None


def test_policy_exports_resolve_lazily_and_completely() -> None:
    assert set(palisade.policy.__all__) == {
        "BudgetState",
        "Call",
        "Clock",
        "Decision",
        "DecisionEngine",
        "Engine",
        "Guard",
        "Risk",
        "RuleTrace",
        "Verdict",
        "compile_bundle",
        "reference_decide",
    }
    for name in palisade.policy.__all__:
        assert getattr(palisade.policy, name) is not None
