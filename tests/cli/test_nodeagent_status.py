"""``palisade nodeagent status -o ...`` against a real node agent (simulated GPUs).

The command is mounted as the ``nodeagent`` group mounts it
(:func:`nodeagent.status.add_status_parser`) and reads the agent's ``/status``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nodeagent.status import add_status_parser
from tests.cli.conftest import table_headers
from tests.nodeagent.test_daemon import EXAMPLE, Daemon


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        tmp_path_factory.mktemp("agent"),
        "--backend",
        "sim",
        "--scenario",
        str(EXAMPLE / "node.yaml"),
        "--bundle",
        str(EXAMPLE / "bundle.yaml"),
        "--interval",
        "0.2",
    )
    try:
        d.wait_ready()
        yield d
    finally:
        d.stop()


def status(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="palisade nodeagent")
    add_status_parser(parser.add_subparsers(dest="action"))
    ns = parser.parse_args(["status", *argv])
    code = ns.func(ns)
    out, err = capsys.readouterr()
    return code, out, err


def test_every_format_of_the_status_parses(
    agent: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, "--url", agent.url, "-o", "json")
    doc = json.loads(out)
    assert code == 0 and doc["node"] == "test-node" and doc["mode"] == "simulated"
    code, out, _ = status(capsys, "--url", agent.url, "-o", "yaml")
    as_yaml = yaml.safe_load(out)
    assert code == 0 and as_yaml["node"] == "test-node"
    assert [g["uuid"] for g in as_yaml["gpus"]] == [g["uuid"] for g in doc["gpus"]]
    code, out, _ = status(capsys, "--url", agent.url, "--json")
    assert code == 0 and json.loads(out)["node"] == "test-node", "--json is -o json"

    code, out, _ = status(capsys, "--url", agent.url)
    table = table_headers(out)
    assert code == 0 and "GPU-11111111" in out
    code, out, _ = status(capsys, "--url", agent.url, "-o", "wide")
    wide = table_headers(out)
    assert code == 0
    assert table[0][:3] == ["#", "name", "UUID"] and "SM MHz" in wide[0]
    assert len(wide) == len(table)
    assert len(wide[0]) > len(table[0])  # GPUs
    tenants = next(i for i, t in enumerate(table) if t[0] == "tenant")
    assert len(wide[tenants]) > len(table[tenants])


def test_an_agent_that_cannot_be_read_exits_1_and_a_bad_url_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = status(capsys, "--url", "http://127.0.0.1:9")
    assert code == 1 and "cannot read http://127.0.0.1:9/status" in err
    code, _, err = status(capsys, "--url", f"file://{tmp_path}")
    assert code == 2 and "must be http(s)" in err
