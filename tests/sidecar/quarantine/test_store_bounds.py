"""The quarantine store: handles per session, TTL, size caps (fake clock)."""

from __future__ import annotations

import pytest

from sidecar.quarantine.store import HandleRefused, QuarantineStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_handles_are_numbered_per_session_and_return_the_raw_text(clock: Clock) -> None:
    store = QuarantineStore(clock=clock)
    a1 = store.put("agent\x00s1", "pods_log", "first")
    a2 = store.put("agent\x00s1", "pods_log", "second")
    b1 = store.put("agent\x00s2", "pods_log", "other session")
    assert (a1.handle, a2.handle, b1.handle) == ("$VAR1", "$VAR2", "$VAR1")
    assert store.get("agent\x00s1", "$VAR2").text == "second"
    assert store.get("agent\x00s2", "$VAR1").text == "other session"


def test_a_handle_from_another_session_is_refused(clock: Clock) -> None:
    store = QuarantineStore(clock=clock)
    store.put("agent\x00s1", "pods_log", "secret log")
    store.put("agent\x00s1", "pods_log", "secret log 2")
    with pytest.raises(HandleRefused, match="no such handle in this session"):
        store.get("agent\x00s2", "$VAR2")
    with pytest.raises(HandleRefused):
        store.get("other-agent\x00s1", "$VAR1")


def test_entries_expire_after_the_ttl(clock: Clock) -> None:
    store = QuarantineStore(ttl_s=60, clock=clock)
    store.put("s", "t", "old")
    clock.now += 59.9
    assert store.get("s", "$VAR1").text == "old"
    clock.now += 0.2
    with pytest.raises(HandleRefused, match="expired"):
        store.get("s", "$VAR1")
    assert len(store) == 0 and store.total_bytes == 0


def test_expired_entries_are_swept_when_new_ones_arrive(clock: Clock) -> None:
    store = QuarantineStore(ttl_s=10, clock=clock)
    for i in range(5):
        store.put(f"s{i}", "t", "x" * 100)
    clock.now += 11
    store.put("s9", "t", "new")
    assert len(store) == 1 and store.total_bytes == 3


def test_a_long_output_is_cut_to_the_entry_cap_and_marked(clock: Clock) -> None:
    store = QuarantineStore(max_entry_bytes=1000, max_total_bytes=10_000, clock=clock)
    entry = store.put("s", "t", "é" * 2000)  # two bytes each: the cut never splits one
    assert entry.truncated and entry.size <= 1000
    assert entry.text == "é" * 500


def test_the_total_size_stays_under_its_cap_by_evicting_the_oldest(clock: Clock) -> None:
    store = QuarantineStore(max_entry_bytes=400, max_total_bytes=1000, clock=clock)
    for i in range(10):
        store.put(f"s{i % 3}", "t", str(i) * 300)
        assert store.total_bytes <= 1000
    assert len(store) == 3
    with pytest.raises(HandleRefused):
        store.get("s0", "$VAR1")  # the oldest went first
    assert store.get("s0", "$VAR4").text == "9" * 300


def test_one_session_cannot_hold_more_than_its_share_of_entries(clock: Clock) -> None:
    store = QuarantineStore(max_entries_per_scope=3, clock=clock)
    for i in range(5):
        store.put("busy", "t", f"out {i}")
    store.put("quiet", "t", "mine")
    assert [store.get("busy", f"$VAR{i}").text for i in (3, 4, 5)] == ["out 2", "out 3", "out 4"]
    with pytest.raises(HandleRefused):
        store.get("busy", "$VAR1")
    assert store.get("quiet", "$VAR1").text == "mine"


def test_the_number_of_sessions_is_bounded(clock: Clock) -> None:
    store = QuarantineStore(max_scopes=2, clock=clock)
    store.put("s1", "t", "a")
    store.put("s2", "t", "b")
    store.put("s3", "t", "c")
    with pytest.raises(HandleRefused):
        store.get("s1", "$VAR1")
    assert store.get("s3", "$VAR1").text == "c"


def test_dropping_a_session_forgets_its_entries(clock: Clock) -> None:
    store = QuarantineStore(clock=clock)
    store.put("s1", "t", "a")
    store.put("s2", "t", "b")
    store.drop_scope("s1")
    assert len(store) == 1 and store.total_bytes == 1
    with pytest.raises(HandleRefused):
        store.get("s1", "$VAR1")


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl_s": 0}, {"max_entry_bytes": 0}, {"max_entry_bytes": 10, "max_total_bytes": 5},
     {"max_entries_per_scope": 0}, {"max_scopes": 0}],
)  # fmt: skip
def test_nonsense_bounds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        QuarantineStore(**kwargs)  # type: ignore[arg-type]
