"""Shared fixtures for audit tests: a signer and a writer on a temp directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from palisade.audit import AuditWriter, Entry, Signer


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


@pytest.fixture
async def writer(tmp_path: Path, signer: Signer) -> AsyncIterator[AuditWriter]:
    w = AuditWriter(tmp_path / "audit.jsonl", signer, source="test", fsync="never")
    await w.start()
    yield w
    await w.aclose()


def entry(i: int = 0, **kw: object) -> Entry:
    base: dict[str, object] = {
        "agent": "sre-agent-payments",
        "tenant": "payments",
        "server": "kubernetes-mcp",
        "tool": "pods_log",
        "session": "s1",
        "arguments": {"namespace": "payments", "n": i},
        "decision": "allow",
        "rule_id": "allow-reads",
        "reason": "reads are allowed",
        "bundle_revision": 7,
    }
    base.update(kw)
    return Entry(**base)  # type: ignore[arg-type]
