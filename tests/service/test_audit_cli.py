"""``palisade audit verify`` and ``keygen``: exit codes and located findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palisade.audit import AuditWriter, Entry, load_signer
from palisade.cli.main import main


def _log(tmp: Path, key: Path, n: int) -> Path:
    signer = load_signer(key)
    path = tmp / "audit.jsonl"
    w = AuditWriter(path, signer, fsync="never", max_bytes=1500)
    w.open()
    for i in range(n):
        w.append_sync(Entry(agent="a", server="s", tool="t", decision="allow", request_id=str(i)))
    w.close()
    return path


@pytest.fixture
def key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "keys" / "audit.pem"
    assert main(["audit", "keygen", "--out", str(path)]) == 0
    assert "key id ed25519:" in capsys.readouterr().out
    return path


def test_an_intact_rotated_log_verifies_from_its_directory_with_a_pinned_key(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tmp_path, key, 10)
    assert len(list(tmp_path.glob("audit.jsonl.*"))) >= 2
    code = main(["audit", "verify", str(tmp_path), "--trusted", f"{key}.pub"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"OK {tmp_path / 'audit.jsonl'}: 10 record(s), seq 1..10" in out


def test_a_tampered_log_exits_one_and_names_file_line_and_seq(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path, key, 2)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["decision"] = "deny"
    lines[-1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    code = main(["audit", "verify", str(path)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"{path}:{len(lines)} (seq {rec['seq']}): record edited" in out
    assert f"FAILED {path}: 1 problem(s)" in out


def test_a_log_signed_by_another_key_fails_against_the_trusted_one(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path, key, 1)
    other = tmp_path / "other.pem"
    assert main(["audit", "keygen", "--out", str(other)]) == 0
    assert main(["audit", "verify", str(path), "--trusted", str(other)]) == 1
    assert "untrusted key" in capsys.readouterr().out


def test_bad_usage_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "verify", str(tmp_path)]) == 2
    assert main(["audit", "verify", str(tmp_path), "--trusted", "ed25519:short"]) == 2
    err = capsys.readouterr().err
    assert "no audit files found" in err or "32-byte" in err


def test_show_filters_records_and_keeps_the_last_n(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tmp_path, key, 10)
    assert (
        main(["audit", "show", str(tmp_path), "--decision", "allow", "--last", "3", "--json"]) == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["request_id"] for r in lines] == ["7", "8", "9"]
    assert main(["audit", "show", str(tmp_path), "--decision", "deny"]) == 0
    assert "0 audit record(s)" in capsys.readouterr().out


def test_a_directory_with_two_chains_verifies_each_on_its_own(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tmp_path, key, 4)
    other = AuditWriter(tmp_path / "nodeagent.jsonl", load_signer(key), fsync="never")
    other.open()
    other.append_sync(Entry(kind="action", reason="evicted"))
    other.close()
    assert main(["audit", "verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "nodeagent.jsonl: 1 record(s)" in out and "audit.jsonl: 4 record(s)" in out
    assert main(["audit", "verify", str(tmp_path), "--expect-head", "sha256:x"]) == 2
