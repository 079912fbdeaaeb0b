"""Answers and rollbacks print a sentence for people and the whole row for scripts."""

from __future__ import annotations

import json

import pytest
import yaml

from palisade.cli.main import main
from tests.cli.conftest import Populated, table_headers
from tests.cli.test_output_formats import run


def test_an_approval_answered_with_json_is_the_decided_row(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", populated.url]
    row = json.loads(
        run(capsys, "approvals", "approve", populated.pending_id, "--by", "bob", *url, "-o", "json")
    )
    assert (row["id"], row["status"], row["by"]) == (populated.pending_id, "approved", "bob")
    # a second answer is refused by the distributor: exit 1, its reason, no document
    assert main(["approvals", "deny", populated.pending_id, *url, "-o", "yaml"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and "already approved" in err
    shown = yaml.safe_load(
        run(capsys, "approvals", "show", populated.pending_id, *url, "-o", "yaml")
    )
    assert shown["status"] == "approved"


def test_a_rollback_prints_a_sentence_a_table_or_the_document(
    populated: Populated, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--url", populated.url]
    doc = json.loads(run(capsys, "fleet", "rollback", "--to", "1", *url, "-o", "json"))
    assert doc["new"] is False and doc["revision"]["revision"] == 1
    assert "already has the content of 1" in run(capsys, "fleet", "rollback", "--to", "1", *url)
    wide = table_headers(run(capsys, "fleet", "rollback", "--to", "1", *url, "-o", "wide"))
    assert wide == [["REVISION", "FROM", "NEW", "DIGEST"]]
    assert main(["fleet", "rollback", "--to", "99", *url, "-o", "json"]) == 1
    assert "no revision 99" in capsys.readouterr().err
