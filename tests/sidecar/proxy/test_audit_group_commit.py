"""Decided calls join the audit writer's group commit, and still wait for their record.

The proxy core decides ``tools/call`` messages against the real engine (compiled
from ``bundle.yaml``) and writes through the real :class:`AuditWriter` with the
sidecar's window (flush at the next loop turn). Concurrent decisions share one
write and one signature; each caller resumes only once its record is on disk, so
nothing is forwarded unaudited; a writer that cannot write turns allow into deny.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from palisade.audit import AuditWriter, Signer, verify_files
from palisade.audit.keys import public_key_from_id
from palisade.bundle.load import load_file
from palisade.policy.engine import compile_bundle
from palisade.policy.types import Decision
from sidecar.audit import WriterSink
from sidecar.core import ProxyCore
from sidecar.identity import DevAuthenticator
from sidecar.identity.principal import Principal
from sidecar.intake import snapshot_of
from sidecar.jsonrpc import INVALID_REQUEST, BadMessage, Message
from sidecar.policy import PolicyHolder
from sidecar.settings import SidecarSettings
from sidecar.upstream import Upstream

from .conftest import BUNDLE, SERVER, TOKENS

SRE = Principal("sre-agent", "payments", "alice@example.com", "sre-token", "dev", dev_mode=True)


def make_core(tmp: Path) -> tuple[ProxyCore, AuditWriter, Signer]:
    signer = Signer.generate()
    writer = AuditWriter(tmp / "audit.jsonl", signer, fsync="never", batch_turns=0, quiet_turns=1)
    writer.open()
    settings = SidecarSettings(upstream="http://127.0.0.1:9", server_name=SERVER)
    core = ProxyCore(
        settings=settings,
        policy=PolicyHolder(snapshot_of(compile_bundle(load_file(BUNDLE), revision=1), SERVER)),
        authenticator=DevAuthenticator(TOKENS, resource="http://127.0.0.1:9/mcp", enabled=True),
        audit=WriterSink(writer),
        upstream=Upstream(settings.upstream, timeout_s=1.0),
    )
    core.sessions.get("").server_version = "1.0.0"
    return core, writer, signer


def call(request_id: int, tool: str = "pods_list") -> Message:
    return Message(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {"namespace": "payments"}},
        }
    )


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_concurrent_decisions_share_one_write_and_one_signature(tmp_path: Path) -> None:
    core, writer, signer = make_core(tmp_path)
    session = core.sessions.get("s1")

    async def decide(i: int) -> tuple[Decision, bool]:
        verdict, _ = await core.decide(call(i), SRE, "s1", session)
        on_disk = any(r["request_id"] == str(i) for r in records(writer.path))
        return verdict.decision, on_disk

    results = await asyncio.gather(*(decide(i) for i in range(1, 33)))

    assert results == [(Decision.ALLOW, True)] * 32  # each resumed with its record on disk
    written = records(writer.path)
    assert [r["seq"] for r in written] == list(range(1, 33))
    assert sum(1 for r in written if r["signature"]) == 1  # one batch, signed once
    assert written[-1]["signature"]
    result = verify_files([writer.path], trusted=[public_key_from_id(signer.key_id)])
    assert result.ok, result.findings
    assert result.records == 32


async def test_a_lone_decision_is_written_and_signed_before_it_returns(tmp_path: Path) -> None:
    core, writer, signer = make_core(tmp_path)

    verdict, _ = await core.decide(call(7), SRE, "s1", core.sessions.get("s1"))

    assert verdict.decision is Decision.ALLOW
    (record,) = records(writer.path)
    assert record["request_id"] == "7" and record["decision"] == "allow"
    assert record["signature"]
    assert verify_files([writer.path], trusted=[public_key_from_id(signer.key_id)]).ok


async def test_batches_and_bad_input_records_between_them_form_one_chain(
    tmp_path: Path,
) -> None:
    core, writer, signer = make_core(tmp_path)
    session = core.sessions.get("s1")

    for start in (1, 11, 21):
        batch = (core.decide(call(i), SRE, "s1", session) for i in range(start, start + 10))
        await asyncio.gather(*batch)
        # bad input is answered synchronously: written and signed at once
        core.bad_input(BadMessage(INVALID_REQUEST, "Invalid Request: test"), SRE, "s1")

    written = records(writer.path)
    assert [r["seq"] for r in written] == list(range(1, 34))
    assert [r["kind"] for r in written].count("bad_input") == 3
    assert sum(1 for r in written if r["signature"]) == 6
    assert verify_files([writer.path], trusted=[public_key_from_id(signer.key_id)]).ok


async def test_an_audit_log_that_cannot_be_written_turns_allow_into_deny(tmp_path: Path) -> None:
    core, writer, _ = make_core(tmp_path)
    writer.close()

    verdict, _ = await core.decide(call(1), SRE, "s1", core.sessions.get("s1"))

    assert verdict.decision is Decision.DENY
    assert verdict.rule_id == "audit-unavailable"
    assert records(writer.path) == []


async def test_a_denied_call_is_committed_like_an_allowed_one(tmp_path: Path) -> None:
    core, writer, signer = make_core(tmp_path)

    verdict, _ = await core.decide(call(3, "helm_install"), SRE, "s1", core.sessions.get("s1"))

    assert verdict.decision is Decision.DENY
    (record,) = records(writer.path)
    assert record["decision"] == "deny" and record["tool"] == "helm_install"
    assert record["signature"]
    assert verify_files([writer.path], trusted=[public_key_from_id(signer.key_id)]).ok


async def test_a_read_is_refused_when_its_record_cannot_be_written(tmp_path: Path) -> None:
    core, writer, _ = make_core(tmp_path)
    read = Message({"jsonrpc": "2.0", "id": 9, "method": "resources/read", "params": {"uri": "x"}})
    await core.audit_read(read, SRE, "s1")
    (record,) = records(writer.path)
    assert (record["kind"], record["tool"], record["arguments"]) == (
        "read",
        "resources/read",
        {"uri": "x"},
    )
    writer.close()
    with pytest.raises(BadMessage) as refused:
        await core.audit_read(read, SRE, "s1")
    assert refused.value.http_status == 503 and "fail closed" in refused.value.message
