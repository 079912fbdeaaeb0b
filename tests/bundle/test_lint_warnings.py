"""Lint warns about rules that can never decide, and never warns wrongly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from palisade.bundle import Bundle, load_file
from palisade.bundle.lint import lint_warnings
from palisade.cli.main import main
from palisade.policy import Call
from palisade.policy.engine import compile_bundle
from tests.policy.kit import bundle, spec_yaml
from tests.policy.test_engine_matches_reference import bundles, call_st

EXAMPLE = Path(__file__).parents[2] / "examples" / "payments-bundle.yaml"


def test_a_rule_after_a_catch_all_is_reported() -> None:
    b = bundle("""\
        rules:
          - {id: reads, decision: allow, match: {risk: [read]}}
          - {id: logs, decision: deny, match: {tools: [pods_log], agents: [sre]}}
          - {id: everything, decision: deny}
          - {id: late, decision: allow, match: {tools: [apply]}}
        """)
    assert [str(w) for w in lint_warnings(b)] == [
        "spec.rules[3]: warning: rule 'late' can never decide: rule 'everything'"
        " (spec.rules[2]) matches every call it matches and comes first [PW001]",
    ]


def test_conditional_or_labelled_rules_shadow_nothing() -> None:
    b = bundle("""\
        rules:
          - {id: cond, decision: deny, when: "has(args.x)"}
          - {id: lab, decision: deny, match: {labels: {env: prod}}}
          - {id: after, decision: allow}
        """)
    assert lint_warnings(b) == []


def test_the_example_bundle_has_no_warnings() -> None:
    assert lint_warnings(load_file(EXAMPLE)) == []


def test_lint_prints_warnings_and_fails_only_when_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "b.yaml"
    f.write_text(spec_yaml("rules:\n  - {id: a, decision: deny}\n  - {id: b, decision: allow}\n"))
    assert main(["bundle", "lint", str(f)]) == 0
    assert f"{f}: spec.rules[1]: warning: rule 'b' can never decide" in capsys.readouterr().out
    assert main(["bundle", "lint", "--strict", str(f)]) == 1


@settings(max_examples=150, deadline=None)
@given(b=bundles(), calls=st.lists(call_st, max_size=20))
def test_a_rule_reported_as_shadowed_never_decides(b: Bundle, calls: list[Call]) -> None:
    shadowed = {b.rules[int(w.field[len("spec.rules[") : -1])].id for w in lint_warnings(b)}
    engine = compile_bundle(b)
    for c in calls:
        assert engine.decide(c, dry_run=True).rule_id not in shadowed
