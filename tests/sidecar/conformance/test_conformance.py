"""The official MCP conformance suite passes through the sidecar wherever it passes direct.

One run of every active server scenario against the conforming SDK server
direct, one through ``palisade sidecar`` (real token from a real issuer, real
bundle, real audit log); each scenario that passes direct must pass through the
sidecar. A summary is written to ``$PALISADE_CONFORMANCE_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sidecar.conformance.peers import (
    AGENT_SUBJECT,
    PeerMissing,
    SuiteResult,
    bundle_for,
    conformance_server,
    issuer_thread,
    reference_server,
    run_suite,
    sidecar,
    tool_names,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The conforming server passes 31 of the 32 scenarios of 0.1.13 (suite "all"); the
# other, server-sse-polling, has no checks in this release.
MIN_DIRECT_PASSES = 31

#: Tools the suite's scenarios call (the conforming server offers all of them).
SUITE_TOOLS = (
    "test_simple_text", "test_image_content", "test_audio_content", "test_embedded_resource",
    "test_multiple_content_types", "test_tool_with_logging", "test_tool_with_progress",
    "test_sampling", "test_elicitation", "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums", "test_error_handling", "test_reconnection",
    "json_schema_2020_12_tool",
)  # fmt: skip


@dataclass
class Runs:
    direct: SuiteResult
    proxied: SuiteResult
    sidecar_log: str
    audit_lines: int


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    work = tmp_path_factory.mktemp("conformance")
    with issuer_thread() as issuer, conformance_server(work) as upstream:
        try:
            direct = run_suite(upstream, work / "direct", token=None)
        except PeerMissing as e:
            pytest.fail(str(e), pytrace=False)
        with sidecar(work, upstream, issuer) as sc:
            token = issuer.token(sub=AGENT_SUBJECT, aud=sc.resource, lifetime_s=3600)
            proxied = run_suite(sc.url, work / "proxied", token=token)
            _retry_regressions_once(direct, proxied, sc.url, work, token)
        audit = sc.audit_dir / "audit.jsonl"
        audit_lines = len(audit.read_text().splitlines()) if audit.exists() else 0
        runs = Runs(direct, proxied, (work / "sidecar.log").read_text(), audit_lines)
    report = os.environ.get("PALISADE_CONFORMANCE_REPORT")
    if report:
        _write_report(Path(report), runs)
    yield runs


def _retry_regressions_once(
    direct: SuiteResult, proxied: SuiteResult, url: str, work: Path, token: str
) -> None:
    """Run once more each scenario that passed direct but failed through the sidecar.

    The suite's own per-request timeouts trip on a loaded 2-core CI machine; a real
    regression fails the second run too, and both failures stay in the report.
    """
    for scenario, ok in direct.passed.items():
        if not ok or proxied.passed.get(scenario, False):
            continue
        again = run_suite(url, work / f"retry-{scenario}", token=token, scenario=scenario)
        if again.passed.get(scenario, False):
            proxied.passed[scenario] = True
            proxied.failures[f"{scenario} (first try)"] = proxied.failures.pop(scenario, [])


def _write_report(path: Path, runs: Runs) -> None:
    doc = {
        "direct": runs.direct.passed,
        "sidecar": runs.proxied.passed,
        "sidecar_failures": runs.proxied.failures,
        "checks": {
            "direct": [runs.direct.checks_passed, runs.direct.checks_run],
            "sidecar": [runs.proxied.checks_passed, runs.proxied.checks_run],
        },
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True))


def test_the_conforming_server_passes_the_suite_direct(runs: Runs) -> None:
    passed = sorted(s for s, ok in runs.direct.passed.items() if ok)
    assert len(passed) >= MIN_DIRECT_PASSES, runs.direct.output[-4000:]


def test_every_scenario_that_passes_direct_passes_through_the_sidecar(runs: Runs) -> None:
    regressions = {
        scenario: runs.proxied.failures.get(scenario, ["no result"])
        for scenario, ok in runs.direct.passed.items()
        if ok and not runs.proxied.passed.get(scenario, False)
    }
    assert not regressions, json.dumps(regressions, indent=2)


def test_the_sidecar_audited_the_conformance_traffic(runs: Runs) -> None:
    assert runs.audit_lines > 0, runs.sidecar_log[-4000:]


def test_without_a_token_the_sidecar_refuses_every_scenario(
    tmp_path: Path,
) -> None:
    with (
        issuer_thread() as issuer,
        conformance_server(tmp_path) as upstream,
        sidecar(tmp_path, upstream, issuer) as sc,
    ):
        result = run_suite(sc.url, tmp_path / "anonymous", token=None, timeout=240)
    assert result.passed, result.output[-2000:]
    assert not any(ok for s, ok in result.passed.items() if s != "dns-rebinding-protection")


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """The same comparison against the reference server from npm (server-everything)."""
    work = tmp_path_factory.mktemp("conformance-reference")
    try:
        with issuer_thread() as issuer, reference_server(work) as upstream:
            import asyncio

            # Register what the server lists and what the suite calls: the policy lets
            # the suite call everything, so any difference is the proxy's doing.
            # (Unregistered tools would be refused by the registry, by design.)
            tools = sorted({*asyncio.run(tool_names(upstream)), *SUITE_TOOLS})
            template = bundle_for("everything", tools, work / "bundle.yaml.in")
            direct = run_suite(upstream, work / "direct", token=None)
            with sidecar(work, upstream, issuer, template=template, server_name="everything") as sc:
                token = issuer.token(sub=AGENT_SUBJECT, aud=sc.resource, lifetime_s=3600)
                proxied = run_suite(sc.url, work / "proxied", token=token)
    except PeerMissing as e:
        pytest.fail(str(e), pytrace=False)
    runs = Runs(direct, proxied, (work / "sidecar.log").read_text(), 0)
    report = os.environ.get("PALISADE_CONFORMANCE_REPORT")
    if report:
        _write_report(Path(report).with_suffix(".reference.json"), runs)
    yield runs


def test_the_reference_server_passes_the_same_scenarios_through_the_sidecar(
    reference_runs: Runs,
) -> None:
    passed = [s for s, ok in reference_runs.direct.passed.items() if ok]
    assert len(passed) >= 10, reference_runs.direct.output[-3000:]
    regressions = {
        scenario: reference_runs.proxied.failures.get(scenario, ["no result"])
        for scenario in passed
        if not reference_runs.proxied.passed.get(scenario, False)
    }
    assert not regressions, json.dumps(regressions, indent=2)
