"""``palisade bundle lint|test|sign|verify`` and ``palisade keys generate`` on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from palisade.cli.main import main
from tests.policy.kit import spec_yaml

EXAMPLE = str(Path(__file__).parents[2] / "examples" / "payments-bundle.yaml")


def test_lint_accepts_the_example_and_prints_its_digest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "lint", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "ok (6 rules" in out and "sha256:" in out


def test_lint_prints_file_line_col_field_message_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec_yaml("rules:\n  - {id: r, decision: alow}\n"))
    assert main(["bundle", "lint", EXAMPLE, str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:21:15: spec.rules[0].decision: 'alow' is not one of" in out


def test_test_runs_the_bundle_tests_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "test", EXAMPLE]) == 0
    out = capsys.readouterr().out
    assert "23 passed, 0 failed" in out
    assert "budget/mutationsPerSession" in out


def test_test_fails_when_a_bundle_test_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "b.yaml"
    f.write_text(
        spec_yaml(
            "rules:\n  - {id: r, decision: deny}\n"
            "tests:\n  - name: wrong on purpose\n"
            "    call: {agent: sre, server: k8s, tool: pods_log}\n"
            "    expect: {decision: allow}\n"
        )
    )
    assert main(["bundle", "test", str(f)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "expected allow, got deny" in out and "0 passed, 1 failed" in out


def test_keys_sign_and_verify_work_together_and_tampering_is_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    key, pub = tmp_path / "k" / "bundle-signing.key", tmp_path / "k" / "bundle-signing.pub"
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert "PRIVATE" not in capsys.readouterr().out
    out = tmp_path / "b.signed"
    assert (
        main(["bundle", "sign", "--key", str(key), EXAMPLE, "--revision", "4", "--out", str(out)])
        == 0
    )
    capsys.readouterr()
    assert main(["bundle", "verify", "--trusted", str(pub), str(out)]) == 0
    assert "revision 4" in capsys.readouterr().out
    data = bytearray(out.read_bytes())
    data[data.index(b"allow-reads")] ^= 1
    out.write_bytes(bytes(data))
    assert main(["bundle", "verify", "--trusted", str(pub), str(out)]) == 1
    assert "NOT VERIFIED: digest mismatch" in capsys.readouterr().out


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 0
    assert main(["keys", "generate", "--out", str(tmp_path)]) == 2


def test_verify_with_a_missing_key_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["bundle", "verify", "--trusted", str(tmp_path / "nope.pub"), EXAMPLE]) == 2


def test_the_console_script_runs_lint_in_a_real_process() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "bundle", "lint", "-q", EXAMPLE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_decide_explains_one_call(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bundle", "decide", EXAMPLE, "--agent", "sre-agent-payments"]
    argv += ["--server", "kubernetes-mcp", "--server-version", "0.0.52"]
    argv += ["--tool", "resources_create_or_update", "--args", '{"namespace": "kube-system"}']
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "decision: deny" in out and "rule:     deny-writes-elsewhere" in out
    assert "skip  deny-destructive: risk 'write' is not in ['destructive', 'admin']" in out
    assert "MATCH deny-writes-elsewhere" in out


def test_decide_refuses_arguments_that_are_not_a_json_object(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["bundle", "decide", EXAMPLE, "--agent", "a", "--server", "s", "--tool", "t"]
    assert main([*argv, "--args", "[1]"]) == 2
    assert main([*argv, "--args", "{nope"]) == 2
    assert "--args is not JSON" in capsys.readouterr().err


DENIED_CALL = [
    "bundle", "decide", EXAMPLE, "--agent", "sre-agent-payments",
    "--server", "kubernetes-mcp", "--server-version", "0.0.52",
    "--tool", "resources_create_or_update", "--args", '{"namespace": "kube-system"}',
]  # fmt: skip


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_decide_prints_the_verdict_as_a_document(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import yaml

    assert main([*DENIED_CALL, "-o", fmt]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    assert (doc["decision"], doc["rule"]) == ("deny", "deny-writes-elsewhere")
    assert doc["wouldBe"] == []
    matched = [t["rule"] for t in doc["explanation"] if t["matched"]]
    assert matched == ["deny-writes-elsewhere"]


def test_decide_fail_on_deny_exits_1_only_for_that_decision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([*DENIED_CALL, "--fail-on", "deny"]) == 1
    assert main([*DENIED_CALL, "--fail-on", "require_approval"]) == 0
    assert main([*DENIED_CALL, "--fail-on", "throttle", "--fail-on", "deny"]) == 1
    assert "decision: deny" in capsys.readouterr().out
