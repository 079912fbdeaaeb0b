"""A rule in ``mode: audit`` through the real sidecar in front of the example MCP
server: the call goes on by the next rule, its audit record names what the staged
rule would have decided, and the would-be decision is counted."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.sidecar.proxy.conftest import (
    BUNDLE,
    UpstreamProc,
    answer_of,
    raw_session,
    run_sidecar,
    session_headers,
)

pytestmark = pytest.mark.e2e

STAGED = {
    "id": "staged-no-pod-listing",
    "mode": "audit",
    "decision": "deny",
    "reason": "pod listing will be refused next week",
    "match": {"tools": ["pods_list"]},
}


def _staged_bundle(tmp: Path) -> Path:
    doc = yaml.safe_load(BUNDLE.read_text())
    doc["spec"]["rules"].insert(0, STAGED)
    path = tmp / "staged.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def test_the_call_proceeds_and_the_record_names_the_would_be_decision(
    upstream: UpstreamProc, tmp_path: Path
) -> None:
    async with (
        run_sidecar(upstream.url, tmp_path, bundle=_staged_bundle(tmp_path)) as sc,
        aiohttp.ClientSession() as http,
    ):
        sid = await raw_session(http, sc.url)
        call = {
            "jsonrpc": "2.0",
            "id": 7,
            "method": "tools/call",
            "params": {"name": "pods_list", "arguments": {"namespace": "payments"}},
        }
        async with http.post(sc.url, json=call, headers=session_headers(sid)) as r:
            doc = await answer_of(r)
        assert "result" in doc and not doc["result"].get("isError"), doc
        (record,) = [a for a in sc.audit() if a.get("tool") == "pods_list"]
        assert record["decision"] == "allow" and record["rule_id"] == "allow-reads"
        assert record["details"]["would_be"] == [
            {
                "rule": "staged-no-pod-listing",
                "decision": "deny",
                "reason": "pod listing will be refused next week",
            }
        ]
        counted = sc.core.metrics.registry.get_sample_value(
            "palisade_audit_mode_decisions_total",
            {
                "decision": "deny",
                "rule": "staged-no-pod-listing",
                "agent": record["agent"],
                "server": record["server"],
                "tool": "pods_list",
            },
        )
        assert counted == 1.0
