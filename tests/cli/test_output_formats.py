"""Every ``-o`` of every command that prints parses as what it claims.

json: one JSON document (a list for lists); yaml: the same document; table: a
table with headers; wide: the same table with more columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from palisade.audit import AuditWriter, Entry, load_signer
from palisade.cli.main import main
from tests.cli.conftest import Populated, table_headers

#: (argv after the URL is added, the kind of document, the first table's first header)
DISTRIBUTOR_COMMANDS: list[tuple[list[str], type, str]] = [
    (["fleet"], dict, "ID"),
    (["fleet", "sidecars"], list, "ID"),
    (["fleet", "nodes"], list, "NODE"),
    (["fleet", "bundles"], dict, "REVISION"),
    (["approvals", "list", "--all"], list, "ID"),
    (["audit", "query"], list, "TIME"),
]


def run(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> str:
    got = main(list(argv))
    out, err = capsys.readouterr()
    assert got == code, f"exit {got}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def _ids(doc: Any) -> Any:
    """What must agree between two reads of a live distributor (ages and states move)."""
    if isinstance(doc, list):
        return [r.get("id", r.get("seq")) for r in doc]
    return sorted(doc)


@pytest.mark.parametrize(
    ("argv", "kind", "first"),
    DISTRIBUTOR_COMMANDS,
    ids=[" ".join(c[0]) for c in DISTRIBUTOR_COMMANDS],
)
def test_distributor_commands_print_every_format(
    populated: Populated,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    kind: type,
    first: str,
) -> None:
    url = ["--url", populated.url]
    doc = json.loads(run(capsys, *argv, *url, "-o", "json"))
    assert isinstance(doc, kind)
    assert doc, "the populated distributor has something to show"
    as_yaml = yaml.safe_load(run(capsys, *argv, *url, "-o", "yaml"))
    assert isinstance(as_yaml, kind) and _ids(as_yaml) == _ids(doc)

    table = table_headers(run(capsys, *argv, *url))
    wide = table_headers(run(capsys, *argv, *url, "-o", "wide"))
    assert table and table[0][0] == first
    assert len(wide) == len(table)
    for narrow_cols, wide_cols in zip(table, wide, strict=True):
        assert len(wide_cols) > len(narrow_cols)
        assert wide_cols[: len(narrow_cols)] == narrow_cols


def test_the_fleet_overview_holds_all_three_tables_and_one_document(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run(capsys, "fleet", "--url", populated.url)
    assert "sidecars (1)" in out and "node agents (1)" in out and "bundles" in out
    assert [t[0] for t in table_headers(out)] == ["ID", "NODE", "REVISION"]
    doc = json.loads(run(capsys, "fleet", "--url", populated.url, "-o", "json"))
    assert [c["id"] for c in doc["sidecars"]] == ["side-1"]
    assert [c["id"] for c in doc["nodes"]] == ["gpu-node-1"]
    assert doc["bundles"][0]["revision"] == 1


def test_approvals_show_prints_one_request_in_every_format(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", populated.url]
    one = json.loads(run(capsys, "approvals", "show", populated.decided_id, *url, "-o", "json"))
    assert isinstance(one, dict)
    assert (one["id"], one["status"], one["by"]) == (populated.decided_id, "approved", "alice")
    assert (
        yaml.safe_load(run(capsys, "approvals", "show", populated.decided_id, *url, "-o", "yaml"))
        == one
    )
    table = table_headers(run(capsys, "approvals", "show", populated.pending_id, *url))
    wide = table_headers(run(capsys, "approvals", "show", populated.pending_id, *url, "-o", "wide"))
    assert table[0][:2] == ["ID", "STATUS"] and len(wide[0]) > len(table[0])
    err_code = main(["approvals", "show", "apr-none", *url])
    assert err_code == 1
    assert "no approval request 'apr-none'" in capsys.readouterr().err


def test_pending_listing_is_a_json_list_of_the_pending_only(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = json.loads(run(capsys, "approvals", "list", "--url", populated.url, "-o", "json"))
    assert [r["id"] for r in rows] == [populated.pending_id]


@pytest.fixture
def audit_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    key = tmp_path / "keys" / "audit.pem"
    assert main(["audit", "keygen", "--out", str(key)]) == 0
    capsys.readouterr()
    logs = tmp_path / "logs"
    logs.mkdir()
    w = AuditWriter(logs / "audit.jsonl", load_signer(key), fsync="never")
    w.open()
    for i, decision in enumerate(["allow", "deny", "allow"]):
        w.append_sync(
            Entry(agent="sre", server="k8s", tool="pods_log", decision=decision, request_id=str(i))
        )
    w.close()
    return logs


def test_audit_show_prints_every_format_and_jsonl(
    audit_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(run(capsys, "audit", "show", str(audit_dir), "-o", "json"))
    assert isinstance(doc, list) and [r["decision"] for r in doc] == ["allow", "deny", "allow"]
    assert yaml.safe_load(run(capsys, "audit", "show", str(audit_dir), "-o", "yaml")) == doc
    lines = run(capsys, "audit", "show", str(audit_dir), "-o", "jsonl").splitlines()
    assert [json.loads(line) for line in lines] == doc
    older = run(capsys, "audit", "show", str(audit_dir), "--json").splitlines()
    assert [json.loads(line) for line in older] == doc, "--json still means one per line"
    table = table_headers(run(capsys, "audit", "show", str(audit_dir)))
    wide = table_headers(run(capsys, "audit", "show", str(audit_dir), "-o", "wide"))
    assert table[0][:2] == ["SEQ", "TIME"] and len(wide[0]) > len(table[0])


def test_audit_verify_reports_as_lines_or_as_one_document(
    audit_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(run(capsys, "audit", "verify", str(audit_dir), "-o", "json"))
    assert doc["ok"] is True
    [chain] = doc["chains"]
    assert (chain["records"], chain["firstSeq"], chain["lastSeq"]) == (3, 1, 3)
    assert chain["problems"] == [] and chain["keyIds"][0].startswith("ed25519:")
    assert yaml.safe_load(run(capsys, "audit", "verify", str(audit_dir), "-o", "yaml")) == doc
    assert "OK " in run(capsys, "audit", "verify", str(audit_dir))
    assert f"signed by: {chain['keyIds'][0]}" in run(
        capsys, "audit", "verify", str(audit_dir), "-o", "wide"
    )

    path = audit_dir / "audit.jsonl"
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["decision"] = "allow"
    lines[1] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    broken = json.loads(run(capsys, "audit", "verify", str(audit_dir), "-o", "json", code=1))
    assert broken["ok"] is False
    assert broken["chains"][0]["problems"][0]["line"] == 2


def test_key_generation_answers_as_a_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(run(capsys, "keys", "generate", "--out", str(tmp_path / "k"), "-o", "json"))
    assert doc["keyId"] and Path(doc["public"]).is_file() and Path(doc["private"]).is_file()
    got = yaml.safe_load(
        run(capsys, "audit", "keygen", "--out", str(tmp_path / "a.pem"), "-o", "yaml")
    )
    assert got["keyId"].startswith("ed25519:") and Path(got["private"]).is_file()
    assert "PRIVATE" not in json.dumps(doc) + json.dumps(got), "paths and ids, never a key"


def test_the_fleet_flags_may_come_before_or_after_the_subcommand(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    before = json.loads(run(capsys, "fleet", "--url", populated.url, "-o", "json", "nodes"))
    after = json.loads(run(capsys, "fleet", "nodes", "--url", populated.url, "-o", "json"))
    assert [r["id"] for r in before] == [r["id"] for r in after] == ["gpu-node-1"]
    mixed = run(capsys, "fleet", "--url", populated.url, "bundles", "-o", "yaml")
    assert yaml.safe_load(mixed)["bundles"][0]["revision"] == 1


EXAMPLE = str(Path(__file__).parents[2] / "examples" / "payments-bundle.yaml")


def test_bundle_lint_and_test_print_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    lint = json.loads(run(capsys, "bundle", "lint", EXAMPLE, "-o", "json"))
    assert lint["ok"] is True and lint["files"][0]["errors"] == []
    assert yaml.safe_load(run(capsys, "bundle", "lint", EXAMPLE, "-o", "yaml")) == lint
    assert run(capsys, "bundle", "lint", EXAMPLE).startswith(f"{EXAMPLE}: ok (")
    tested = json.loads(run(capsys, "bundle", "test", EXAMPLE, "-o", "json"))
    assert yaml.safe_load(run(capsys, "bundle", "test", EXAMPLE, "-o", "yaml")) == tested
    assert [r["test"] for r in tested["results"]]
    table = table_headers(run(capsys, "bundle", "test", EXAMPLE))
    assert table[0] == ["RESULT", "TEST", "OUTCOME", "RULE", "PROBLEM"]
