"""Rules in ``mode: audit``: evaluated on every call and recorded as what they would
have decided, while the call goes on by the next rule (staged enforcement)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palisade.bundle import BundleError
from palisade.policy import Decision
from palisade.policy.engine import compile_bundle
from palisade.policy.reference import reference_decide
from palisade.policy.types import WouldBe
from tests.policy.kit import bundle, call

STAGED = """\
    rules:
      - id: no-deletes-soon
        mode: audit
        decision: deny
        reason: deletes will need a ticket
        match: {tools: [delete]}
      - id: audit-needs-ticket
        mode: audit
        decision: require_approval
        when: "!has(args.ticket)"
        match: {tools: [delete, apply]}
      - {id: ops-may-delete, decision: allow, match: {tools: [delete, apply]}}
    """


def test_an_audit_rule_records_what_it_would_decide_and_the_next_rule_decides() -> None:
    engine = compile_bundle(bundle(STAGED))
    v = engine.decide(call("delete"))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "ops-may-delete")
    assert v.would_be == (
        WouldBe("no-deletes-soon", Decision.DENY, "deletes will need a ticket"),
        WouldBe("audit-needs-ticket", Decision.REQUIRE_APPROVAL, "rule 'audit-needs-ticket'"
                " decided require_approval"),
    )  # fmt: skip


def test_a_when_that_is_false_records_nothing_and_every_call_is_evaluated() -> None:
    engine = compile_bundle(bundle(STAGED))
    with_ticket = engine.decide(call("apply", arguments={"ticket": "OPS-1"}))
    assert with_ticket.decision is Decision.ALLOW and with_ticket.would_be == ()
    # the route is cached: the next call of the same tool is evaluated again
    without = engine.decide(call("apply", arguments={}))
    assert [w.rule_id for w in without.would_be] == ["audit-needs-ticket"]
    again = engine.decide(call("apply", arguments={"ticket": "OPS-2"}))
    assert again.would_be == ()


def test_an_audit_rule_never_decides_even_when_nothing_follows_it() -> None:
    b = bundle("""\
        defaultDecision: allow
        rules:
          - {id: staged-deny, mode: audit, decision: deny, match: {tools: [pods_log]}}
        """)
    v = compile_bundle(b).decide(call("pods_log"))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "default")
    assert [(w.rule_id, w.decision) for w in v.would_be] == [("staged-deny", Decision.DENY)]
    other = compile_bundle(b).decide(call("pods_list"))
    assert other.would_be == ()


def test_a_failing_when_in_audit_mode_records_the_failure_mode_and_does_not_deny() -> None:
    b = bundle("""\
        rules:
          - {id: staged, mode: audit, decision: deny, when: "args.n > 3", match: {tools: [apply]}}
          - {id: ok, decision: allow, match: {tools: [apply]}}
        """)
    v = compile_bundle(b).decide(call("apply", arguments={}))
    assert (v.decision, v.rule_id) == (Decision.ALLOW, "ok")
    (w,) = v.would_be
    assert (w.rule_id, w.decision) == ("staged", Decision.DENY)
    assert "could not be evaluated" in w.reason


def test_explain_marks_audit_rules_and_goes_on_to_the_deciding_rule() -> None:
    v = compile_bundle(bundle(STAGED)).decide(call("delete"), explain=True)
    traces = {t.rule_id: t for t in v.explanation}
    assert "mode audit: would deny, recorded, not enforced" in traces["no-deletes-soon"].detail
    assert traces["ops-may-delete"].matched


def test_mode_is_validated() -> None:
    with pytest.raises(BundleError, match=r"spec\.rules\[0\]\.mode"):
        bundle("""\
            rules:
              - {id: x, mode: dryrun, decision: deny}
            """)


@given(
    modes=st.lists(st.sampled_from(["enforce", "audit"]), min_size=3, max_size=3),
    decisions=st.lists(st.sampled_from(["allow", "deny", "throttle"]), min_size=3, max_size=3),
    tool=st.sampled_from(["pods_log", "pods_list", "apply", "delete"]),
)
def test_the_engine_and_the_reference_agree_with_audit_rules(
    modes: list[str], decisions: list[str], tool: str
) -> None:
    rules = "\n".join(
        f"  - {{id: r{i}, mode: {m}, decision: {d}, match: {{tools: ['{t}']}}}}"
        for i, (m, d, t) in enumerate(zip(modes, decisions, ["pods_*", tool, "*"], strict=True))
    )
    b = bundle("rules:\n" + rules + "\n")
    v = compile_bundle(b).decide(call(tool))
    assert (v.decision, v.rule_id) == reference_decide(b, call(tool))
    audited = [f"r{i}" for i, m in enumerate(modes) if m == "audit"]
    assert {w.rule_id for w in v.would_be} <= set(audited)
    enforcing_before = {w.rule_id for w in v.would_be}
    assert all(int(r[1:]) < int(v.rule_id[1:]) for r in enforcing_before if v.rule_id[0] == "r")
