"""A record converts to ``palisade.v1.AuditRecord`` for shipping, losing nothing."""

from __future__ import annotations

import base64
from pathlib import Path

from palisade.audit import AuditWriter, Signer, to_proto
from palisade.v1 import audit_pb2, policy_pb2

from .conftest import entry


async def test_a_record_becomes_the_proto_message_field_for_field(
    tmp_path: Path, signer: Signer
) -> None:
    async with AuditWriter(tmp_path / "a.jsonl", signer, source="pod-1", fsync="never") as w:
        rec = await w.append(
            entry(3, decision="require_approval", approval_id="apr-1", dev_identity=True)
        )
    msg = audit_pb2.AuditRecord.FromString(to_proto(rec).SerializeToString())
    assert (msg.seq, msg.source, msg.agent, msg.tool) == (1, "pod-1", rec["agent"], "pods_log")
    assert msg.decision == policy_pb2.DECISION_REQUIRE_APPROVAL
    assert (msg.approval_id, msg.dev_identity, msg.kind) == ("apr-1", True, "decision")
    assert (msg.hash, msg.prev_hash, msg.key_id) == (rec["hash"], "", signer.key_id)
    assert msg.signature == base64.b64decode(str(rec["signature"]))
    assert dict(msg.arguments) == {"namespace": "payments", "n": 3.0}
    assert msg.time.ToJsonString().startswith(str(rec["time"])[:19])
