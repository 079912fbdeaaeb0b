"""The replay gate's judgment (pure): over the threshold of recently allowed calls or not."""

from __future__ import annotations

from palisade.policy.replay import Change, Report, judge


def change(was: str, now: str, rule: str = "freeze") -> Change:
    return Change("t", "sre", "k8s", "pods_list", was, "allow-reads", now, rule, "frozen")


def test_the_ratio_is_of_the_calls_that_were_allowed() -> None:
    report = Report(replayed=10, unchanged=8, allowed_unchanged=6)
    report.changes = [change("allow", "deny"), change("deny", "allow", "open")]
    j = judge(report, 0.10)
    assert (j.allowed_before, j.denied_more) == (7, 1)
    assert j.over and round(j.ratio, 3) == 0.143
    assert "1 of 7" in j.message and "freeze (1)" in j.message and "open" not in j.message
    assert not judge(report, 0.15).over


def test_no_allowed_call_replayed_is_never_over() -> None:
    report = Report(replayed=3, unchanged=3)
    j = judge(report, 0.0)
    assert not j.over and j.ratio == 0.0


def test_at_the_threshold_exactly_passes() -> None:
    report = Report(replayed=4, unchanged=2, allowed_unchanged=2)
    report.changes = [change("allow", "deny"), change("allow", "require_approval")]
    assert not judge(report, 0.5).over and judge(report, 0.49).over
