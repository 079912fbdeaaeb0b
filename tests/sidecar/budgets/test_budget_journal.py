"""Budget counters survive a restart: the journal replays into a fresh state.

The pure parts with hand-stepped clocks (a "restart" is a new state and a new
journal on the same file, with the monotonic clock started afresh), and the
real ``palisade sidecar`` process killed with SIGKILL between two calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palisade.bundle import from_document
from palisade.policy import Call, Decision
from palisade.policy.budgets import BudgetState
from palisade.policy.engine import compile_bundle
from sidecar.budget_journal import FILE_NAME, BudgetJournal, open_journal
from tests.policy.kit import FakeClock

BUNDLE = {
    "apiVersion": "palisade.dev/v1alpha1",
    "kind": "PolicyBundle",
    "metadata": {"name": "budgets"},
    "spec": {
        "defaultDecision": "allow",
        "servers": [
            {
                "name": "k8s",
                "tools": [
                    {"name": "apply", "risk": "write", "cost": 3},
                    {"name": "list", "risk": "read"},
                ],
            }
        ],
        "tenants": [{"name": "pay"}],
        "agents": [{"id": "sre", "tenant": "pay"}, {"id": "bot", "tenant": "pay"}],
        "budgets": {
            "mutationsPerSession": 2,
            "mutationsPerAgent": {"limit": 4, "windowSeconds": 600},
            "spendCaps": [{"id": "spend", "limit": 10, "windowSeconds": 600}],
            "rateLimits": [{"id": "calls", "per": "agent", "rate": 0.001, "burst": 6}],
        },
    },
}


class Clocks:
    """A monotonic clock and a wall clock, stepped together; a restart resets the first."""

    def __init__(self, mono: float, wall: float) -> None:
        self.mono = FakeClock(mono)
        self.wall = wall

    def step(self, seconds: float) -> None:
        self.mono.advance(seconds)
        self.wall += seconds

    def restart(self, mono: float) -> None:
        self.mono = FakeClock(mono)


def engine_on(path: Path, clocks: Clocks):  # type: ignore[no-untyped-def]
    state = BudgetState()
    journal = BudgetJournal.open(state, path, clock=clocks.mono, wall=lambda: clocks.wall)
    engine = compile_bundle(from_document(BUNDLE), clock=clocks.mono, state=state)
    return engine, journal


def apply(agent: str = "sre", session: str = "s1") -> Call:
    return Call(agent=agent, server="k8s", tool="apply", session=session)


def test_mutations_spend_and_buckets_are_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    clocks = Clocks(mono=1_000.0, wall=1_800_000_000.0)
    engine, journal = engine_on(path, clocks)
    assert engine.decide(apply(session="s1")).decision is Decision.ALLOW
    assert engine.decide(apply(session="s1")).decision is Decision.ALLOW
    journal.close()

    clocks.step(30)
    clocks.restart(mono=5.0)  # a new process: its monotonic clock starts elsewhere
    engine, journal = engine_on(path, clocks)
    # the session's count came back: its third mutation needs a human
    again = engine.decide(apply(session="s1"))
    assert (again.decision, again.rule_id) == (
        Decision.REQUIRE_APPROVAL,
        "budget/mutationsPerSession",
    )
    # the spend (2 x 3 of 10) came back too: one more fits, the next does not
    assert engine.decide(apply(session="s2")).decision is Decision.ALLOW
    over = engine.decide(apply(session="s3"))
    assert (over.decision, over.rule_id) == (Decision.DENY, "budget/spend")
    assert "resets in 570s" in over.reason  # the window kept its wall-clock start
    # the rate bucket (burst 6) came back with 3 calls taken: 3 more, then throttled
    read = Call(agent="sre", server="k8s", tool="list")
    assert [engine.decide(read).decision for _ in range(4)] == [Decision.ALLOW] * 3 + [
        Decision.THROTTLE
    ]
    journal.close()


def test_the_agent_window_holds_across_sessions_and_restarts_and_then_resets(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILE_NAME
    clocks = Clocks(mono=50.0, wall=1_800_000_000.0)
    bundle = json.loads(json.dumps(BUNDLE))
    del bundle["spec"]["budgets"]["spendCaps"]
    state = BudgetState()
    journal = BudgetJournal.open(state, path, clock=clocks.mono, wall=lambda: clocks.wall)
    engine = compile_bundle(from_document(bundle), clock=clocks.mono, state=state)
    # a fresh session each time: the per-session cap never bites
    for session in ("a", "b", "c", "d"):
        assert engine.decide(apply(session=session)).decision is Decision.ALLOW
    journal.close()

    clocks.restart(mono=0.0)
    state = BudgetState()
    journal = BudgetJournal.open(state, path, clock=clocks.mono, wall=lambda: clocks.wall)
    engine = compile_bundle(from_document(bundle), clock=clocks.mono, state=state)
    held = engine.decide(apply(session="e"))
    assert (held.decision, held.rule_id) == (Decision.REQUIRE_APPROVAL, "budget/mutationsPerAgent")
    assert held.approval_id
    assert engine.decide(apply(agent="bot", session="e")).decision is Decision.ALLOW
    assert engine.decide(Call(agent="sre", server="k8s", tool="list")).decision is Decision.ALLOW
    clocks.step(601)
    assert engine.decide(apply(session="f")).decision is Decision.ALLOW
    journal.close()


def test_a_torn_last_line_and_foreign_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    clocks = Clocks(mono=10.0, wall=1_800_000_000.0)
    engine, journal = engine_on(path, clocks)
    engine.decide(apply())
    journal.close()
    with path.open("ab") as f:
        f.write(
            b'["sessions",["x","y"],"many"]\n["nope",[],1]\n[1,2]\n\xff\n["sessions",["sre","s1"],'
        )
    engine, journal = engine_on(path, clocks)
    assert journal.skipped == 5
    assert engine.decide(apply()).decision is Decision.ALLOW  # the 2nd of 2
    assert engine.decide(apply()).decision is Decision.REQUIRE_APPROVAL
    journal.close()
    # opening rewrote the file as a snapshot: the bad lines are gone
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_compaction_keeps_every_counter_and_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    clocks = Clocks(mono=10.0, wall=1_800_000_000.0)
    state = BudgetState()
    journal = BudgetJournal.open(
        state, path, clock=clocks.mono, wall=lambda: clocks.wall, compact_after=20
    )
    for i in range(200):
        with state.lock:
            state.count_mutation("sre", f"s{i % 4}")
    assert len(path.read_text().splitlines()) <= 1 + 20 + 1
    journal.close()
    again = BudgetState()
    BudgetJournal.open(again, path, clock=clocks.mono, wall=lambda: clocks.wall).close()
    assert [again.mutations("sre", f"s{i}") for i in range(4)] == [50, 50, 50, 50]


def test_a_journal_that_cannot_be_read_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / FILE_NAME).mkdir()  # a directory where the file should be
    with pytest.raises(OSError):
        open_journal(BudgetState(), tmp_path)
