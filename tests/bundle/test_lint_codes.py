"""Stable lint codes: every problem a bundle can be refused for carries one, and the
CLI shows them in every format."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml

from palisade.bundle import BundleValidationError, load_bytes
from palisade.bundle.codes import DESCRIPTIONS, Code
from palisade.cli.main import main
from tests.policy.kit import spec_yaml

ROOT = Path(__file__).parents[2]


def test_every_place_that_reports_a_problem_gives_it_a_code() -> None:
    """Structural: each ``Issue(...)`` and ``Checker.err(...)`` in the bundle package
    passes a ``Code`` member, so no new check can forget one."""
    missing = []
    for path in sorted((ROOT / "palisade" / "bundle").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name not in ("Issue", "err") or path.name == "errors.py":
                continue
            code = [k.value for k in node.keywords if k.arg == "code"]
            if name == "Issue" and len(node.args) == 4:
                code = [node.args[3]]
            ok = (
                code
                and isinstance(code[0], ast.Attribute)
                and ast.unparse(code[0]).startswith("Code.")
            )
            if not ok and path.name == "checker.py" and code and ast.unparse(code[0]) == "code":
                ok = True  # Checker.err passes on the code its callers give (checked here)
            if not ok:
                missing.append(f"{path.name}:{node.lineno}")
    assert not missing, f"problems reported without a code: {missing}"


def test_every_code_is_documented_and_unique() -> None:
    assert set(DESCRIPTIONS) == set(Code)
    assert len({c.value for c in Code}) == len(Code)
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    for code in Code:
        assert f"| `{code.value}` |" in doc


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ("rules:\n  - {id: r, decision: perhaps}\n", Code.NOT_A_CHOICE),
        ("rules:\n  - {id: r, decision: allow, decisoin: deny}\n", Code.UNKNOWN_FIELD),
        ("rules:\n  - {decision: allow}\n", Code.MISSING),
        (
            "rules:\n  - {id: r, decision: allow, match: {tools: [nosuch]}}\n",
            Code.UNKNOWN_REFERENCE,
        ),
        ("rules:\n  - {id: r, decision: allow, when: 'args.'}\n", Code.EXPRESSION),
        ("rules:\n  - {id: r, decision: allow, approvers: 2}\n", Code.COMBINATION),
        ("rules:\n  - {id: r, decision: allow}\n  - {id: r, decision: deny}\n", Code.DUPLICATE),
    ],
)
def test_each_kind_of_problem_gets_its_code(extra: str, code: Code) -> None:
    with pytest.raises(BundleValidationError) as refused:
        load_bytes(spec_yaml(extra))
    assert [i.code for i in refused.value.issues] == [code.value]
    assert str(refused.value.issues[0]).endswith(f"[{code.value}]")


def test_yaml_that_does_not_parse_is_pb001() -> None:
    with pytest.raises(BundleValidationError) as refused:
        load_bytes(b"spec: [unclosed\n")
    assert refused.value.issues[0].code == Code.YAML


def write(tmp: Path, name: str, extra: str) -> str:
    path = tmp / name
    path.write_text(spec_yaml(extra))
    return str(path)


def test_lint_prints_codes_in_every_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write(tmp_path, "bad.yaml", "rules:\n  - {id: r, decision: perhaps}\n")
    shadow = write(
        tmp_path,
        "shadow.yaml",
        "rules:\n  - {id: a, decision: deny}\n"
        "  - {id: b, decision: allow, match: {tools: [apply]}}\n",
    )
    assert main(["bundle", "lint", bad, shadow]) == 1
    out = capsys.readouterr().out
    assert "spec.rules[0].decision" in out and out.count("[PB014]") == 1
    assert "warning:" in out and "[PW001]" in out and "shadow.yaml: ok" in out

    assert main(["bundle", "lint", bad, "-o", "wide"]) == 1
    assert f"PB014: {DESCRIPTIONS[Code.NOT_A_CHOICE]}" in capsys.readouterr().out

    assert main(["bundle", "lint", bad, shadow, "--strict", "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    first, second = doc["files"]
    assert [e["code"] for e in first["errors"]] == ["PB014"]
    assert first["errors"][0]["field"] == "spec.rules[0].decision"
    assert first["errors"][0]["line"] > 0 and first["errors"][0]["file"] == bad
    assert [w["code"] for w in second["warnings"]] == ["PW001"] and second["rules"] == 2

    assert main(["bundle", "lint", shadow, "-o", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["files"][0]["digest"].startswith("sha256:")


def test_bundle_test_speaks_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    example = str(ROOT / "examples" / "payments-bundle.yaml")
    assert main(["bundle", "test", example, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] == 0 and doc["passed"] == len(doc["results"]) > 0
    assert all(r["passed"] is True and r["result"] == "PASS" for r in doc["results"])
    assert main(["bundle", "test", example]) == 0
    table = capsys.readouterr().out
    assert "PASS" in table and f"{doc['passed']} passed, 0 failed" in table
