"""Compile, scope and store: deterministic digests, located errors, leaderless revisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributor.compiler import CompileError, compile_bundle, scope_for, scope_key
from distributor.fleet import GONE, LIVE, STALE, liveness
from distributor.store import Store, StoreError
from palisade.bundle import canonical_json, digest_of, from_document
from tests.distributor.helpers import bundle_yaml

EXTRA = """\
apiVersion: palisade.dev/v1alpha1
kind: PolicyBundle
metadata: {name: extra}
spec:
  servers:
    - name: slack-mcp
      tools: [{name: post, risk: write}]
  rules:
    - {id: slack, match: {servers: [slack-mcp]}, decision: allow}
"""


class TestCompile:
    def test_the_same_sources_give_the_same_digest_in_any_order(self) -> None:
        a = compile_bundle([("payments.yaml", bundle_yaml()), ("z-extra.yaml", EXTRA)])
        b = compile_bundle([("z-extra.yaml", EXTRA), ("payments.yaml", bundle_yaml())])
        assert a.digest == b.digest and a.document == b.document
        assert a.names == ("extra", "payments")

    def test_a_change_changes_the_digest(self) -> None:
        assert (
            compile_bundle([("p.yaml", bundle_yaml())]).digest
            != compile_bundle([("p.yaml", bundle_yaml(reason="x"))]).digest
        )

    def test_errors_name_file_line_and_field(self) -> None:
        with pytest.raises(CompileError) as exc:
            compile_bundle([("payments.yaml", bundle_yaml().replace("risk: read", "risk: rd"))])
        err = exc.value.errors[0]
        assert err.source == "payments.yaml"
        assert err.line == 11
        assert err.field.startswith("spec.servers[0].tools[0].risk")

    def test_yaml_syntax_errors_are_located(self) -> None:
        with pytest.raises(CompileError) as exc:
            compile_bundle([("broken.yaml", "spec: [unclosed\n")])
        assert exc.value.errors[0].source == "broken.yaml"
        assert exc.value.errors[0].line >= 1

    def test_no_documents_is_an_error_not_an_empty_policy(self) -> None:
        with pytest.raises(CompileError):
            compile_bundle([])


class TestScope:
    @pytest.fixture
    def document(self) -> dict[str, object]:
        return compile_bundle([("p.yaml", bundle_yaml()), ("x.yaml", EXTRA)]).document

    @pytest.mark.parametrize(
        "key",
        [
            scope_key("sidecar", "kubernetes-mcp"),
            scope_key("sidecar", "slack-mcp"),
            scope_key("node", ""),
            scope_key("full", ""),
        ],
    )
    def test_every_scoped_document_is_itself_a_valid_bundle(
        self, document: dict[str, object], key: str
    ) -> None:
        from_document(json.loads(canonical_json(scope_for(document, key))))

    def test_a_sidecar_gets_only_its_server_and_the_rules_that_can_match_it(
        self, document: dict[str, object]
    ) -> None:
        spec = scope_for(document, scope_key("sidecar", "slack-mcp"))["spec"]
        assert [s["name"] for s in spec["servers"]] == ["slack-mcp"]
        assert [r["id"] for r in spec["rules"]] == ["slack"]


def _doc(n: int) -> tuple[str, bytes]:
    """A stored document and its digest (the store verifies one against the other)."""
    data = canonical_json({"n": n})
    return digest_of(data), data


class TestStore:
    def test_two_replicas_publishing_the_same_content_agree_on_one_revision(
        self, tmp_path: Path
    ) -> None:
        a, b = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
        r1, new1 = a.publish(_doc(1)[0], "p", _doc(1)[1])
        r2, new2 = b.publish(_doc(1)[0], "p", _doc(1)[1])
        assert (r1.revision, new1) == (1, True)
        assert (r2.revision, new2) == (1, False)
        r3, _ = b.publish(_doc(2)[0], "p", _doc(2)[1])
        r4, new4 = a.publish(_doc(2)[0], "p", _doc(2)[1])
        assert r3.revision == r4.revision == 2 and not new4

    def test_a_rollback_is_a_new_revision_that_sources_do_not_undo(self, tmp_path: Path) -> None:
        s = Store(tmp_path / "s.db")
        (d1, one), (d2, two) = _doc(1), _doc(2)
        s.publish(d1, "p", one)
        s.publish(d2, "p", two)
        rev, new = s.rollback(1, "bob")
        assert (rev.revision, rev.digest, rev.document, rev.origin, new) == (
            3,
            d1,
            one,
            "rollback:1",
            True,
        )
        again, new = s.publish(d2, "p", two)  # sources unchanged
        assert again.revision == 3 and not new
        assert [r.revision for r in s.history()] == [3, 2, 1]

    def test_rolling_back_to_an_unknown_revision_is_refused(self, tmp_path: Path) -> None:
        s = Store(tmp_path / "s.db")
        s.publish(_doc(1)[0], "p", _doc(1)[1])
        with pytest.raises(StoreError):
            s.rollback(5, "bob")

    def test_an_approval_can_be_decided_once(self, tmp_path: Path) -> None:
        s = Store(tmp_path / "s.db", clock=lambda: 100.0)
        row = {
            "id": "a1",
            "client_id": "c",
            "agent": "ag",
            "server": "sv",
            "tool": "t",
            "tenant": "",
            "rule_id": "r",
            "reason": "",
            "call_digest": "d",
            "request": b"",
            "arguments": {"x": 1},
        }
        assert s.add_approval(row) and not s.add_approval(row)
        decided = s.decide_approval("a1", True, {"username": "alice"}, "ok", 60)
        assert decided["status"] == "approved" and decided["expires"] == 160.0
        with pytest.raises(StoreError, match="already approved"):
            s.decide_approval("a1", False, {"username": "bob"}, "", 60)

        # delivered once; asked again after a reconnect: delivered again, to that client only
        s.mark_delivered("a1")
        assert s.undelivered_decisions() == []
        assert not s.add_approval({**row, "client_id": "someone-else"})
        assert s.undelivered_decisions() == []
        assert not s.add_approval(row)
        assert [d["id"] for d in s.undelivered_decisions()] == ["a1"]


def test_liveness_goes_live_stale_gone_like_a_lease() -> None:
    assert liveness(100, 139, 40, 300) == LIVE
    assert liveness(100, 141, 40, 300) == STALE
    assert liveness(100, 401, 40, 300) == GONE
