"""``palisade bundle replay`` over an audit log the real sidecar wrote in front of the
example MCP server: a candidate that tightens two rules changes exactly the calls
those rules decide, and every output format parses as what it claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from palisade.bundle import load_file
from palisade.policy.engine import compile_bundle
from palisade.policy.replay import replay
from tests.sidecar.proxy.conftest import (
    BUNDLE,
    UpstreamProc,
    answer_of,
    raw_session,
    run_sidecar,
    session_headers,
)

pytestmark = pytest.mark.e2e

CALLS = [  # (token, tool, arguments)
    ("sre-token", "pods_list", {"namespace": "payments"}),
    ("sre-token", "pods_log", {"namespace": "payments", "name": "api-1"}),
    ("sre-token", "resources_create_or_update", {"namespace": "payments", "name": "cm"}),
    ("sre-token", "resources_create_or_update", {"namespace": "search", "name": "cm"}),
    ("search-token", "pods_list", {"namespace": "search"}),
]


def _tightened(tmp: Path) -> Path:
    doc = yaml.safe_load(BUNDLE.read_text())
    rules = doc["spec"]["rules"]
    rules.insert(
        0,
        {
            "id": "no-pod-logs",
            "decision": "deny",
            "reason": "pod logs carry customer data",
            "match": {"tools": ["pods_log"]},
        },
    )
    (writes,) = [r for r in rules if r["id"] == "allow-writes-own-namespace"]
    writes["decision"] = "require_approval"
    path = tmp / "candidate.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
async def recorded(upstream: UpstreamProc, tmp_path: Path) -> Path:
    async with run_sidecar(upstream.url, tmp_path) as sc, aiohttp.ClientSession() as http:
        sessions: dict[str, str] = {}
        for rid, (token, tool, args) in enumerate(CALLS):
            if token not in sessions:
                sessions[token] = await raw_session(http, sc.url, token=token)
            body = {
                "jsonrpc": "2.0",
                "id": rid,
                "method": "tools/call",
                "params": {"name": tool, "arguments": args},
            }
            headers = session_headers(sessions[token], token=token)
            async with http.post(sc.url, json=body, headers=headers) as r:
                await answer_of(r)
        decided = [(a["agent"], a["tool"], a["decision"]) for a in sc.audit() if a.get("tool")]
        assert decided == [
            ("sre-agent", "pods_list", "allow"),
            ("sre-agent", "pods_log", "allow"),
            ("sre-agent", "resources_create_or_update", "allow"),
            ("sre-agent", "resources_create_or_update", "deny"),
            ("search-agent", "pods_list", "deny"),
        ], "the recorded decisions under the current bundle"
        return sc.audit_path


async def test_the_tightened_candidate_changes_exactly_those_calls(
    recorded: Path, tmp_path: Path
) -> None:
    from palisade.audit.files import iter_records

    records = [r for _, r in iter_records(recorded)]
    report = replay(records, compile_bundle(load_file(_tightened(tmp_path))))
    changed = [(c.agent, c.tool, c.was, c.now, c.now_rule) for c in report.changes]
    assert changed == [
        ("sre-agent", "pods_log", "allow", "deny", "no-pod-logs"),
        (
            "sre-agent",
            "resources_create_or_update",
            "allow",
            "require_approval",
            "allow-writes-own-namespace",
        ),
    ]
    assert (report.replayed, report.unchanged, report.not_replayable) == (5, 3, 0)
    assert report.denied_more == 2 and report.allowed_more == 0
    assert report.by_agent() == {"sre-agent": 2}
    # the same bundle replayed changes nothing
    same = replay(records, compile_bundle(load_file(BUNDLE)))
    assert same.changes == [] and same.replayed == 5


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "palisade.cli.main", "bundle", "replay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_cli_prints_every_format_and_exits_for_ci(recorded: Path, tmp_path: Path) -> None:
    candidate = str(_tightened(tmp_path))
    docs: dict[str, Any] = {}
    for fmt, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        out = _cli(candidate, "--audit", str(recorded), "-o", fmt)
        assert out.returncode == 1, out.stderr  # decisions change: --fail-on changed
        docs[fmt] = parse(out.stdout)
    assert docs["json"] == docs["yaml"]
    assert docs["json"]["changed"] == 2 and docs["json"]["deniedMore"] == 2
    assert docs["json"]["byRule"] == {"allow-writes-own-namespace": 1, "no-pod-logs": 1}
    table = _cli(candidate, "--audit", str(recorded))
    assert "AGENT" in table.stdout and "no-pod-logs" in table.stdout
    assert "REASON" not in table.stdout
    wide = _cli(candidate, "--audit", str(recorded), "-o", "wide")
    assert "REASON" in wide.stdout and "pod logs carry customer data" in wide.stdout
    assert _cli(candidate, "--audit", str(recorded), "--fail-on", "never").returncode == 0
    same = _cli(str(BUNDLE), "--audit", str(recorded), "--fail-on", "denied-more")
    assert same.returncode == 0, same.stdout + same.stderr
    bad = _cli(candidate, "--audit", str(tmp_path / "missing.jsonl"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
