"""The distributor's /metrics: pushes, ACKs and their latency, NACKs, the fleet now, sources."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from distributor.metrics import fleet_gauges
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import bundle_yaml, eventually, make_client, write_key

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until(url: str, name: str, want: float, **labels: str) -> Samples:
    """Scrape until ``name{labels}`` reads ``want`` (the fleet is flushed to the store
    every second), or fail naming what was read."""
    seen = None
    for _ in range(150):
        samples = await asyncio.to_thread(scrape, url)
        seen = value(samples, name, **labels)
        if seen == want:
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} stayed {seen}, never {want}")


def test_fleet_gauges_count_states_nacks_laggards_and_the_oldest_waiting_approval() -> None:
    def row(kind: str, seen: float, revision: int, nack: int = 0) -> dict[str, object]:
        return {"kind": kind, "last_seen": seen, "revision": revision, "nack_revision": nack}

    sidecar, node = "CLIENT_KIND_SIDECAR", "CLIENT_KIND_NODE_AGENT"
    g = fleet_gauges(
        [
            row(sidecar, 99, 3),
            row(sidecar, 98, 2, nack=3),  # live, behind, NACKed the served revision
            row(sidecar, 50, 3),  # stale
            row(node, 0, 1),  # gone: not counted at all
            row(node, 95, 3, nack=2),  # an old NACK, since superseded by an ACK of 3
        ],
        [{"created": 40.0}, {"created": 70.0}],
        now=100.0,
        revision=3,
        grace_s=40,
        gone_after_s=90,
    )
    assert g.clients[("sidecar", "live")] == 2
    assert g.clients[("sidecar", "stale")] == 1
    assert g.clients[("node", "live")] == 1 and g.clients[("node", "stale")] == 0
    assert g.nacking == {"sidecar": 1, "node": 0}
    assert g.behind == {"sidecar": 1, "node": 0}
    assert g.approvals_pending == 2 and g.oldest_pending_s == 60.0


def test_with_no_client_and_no_approval_every_fleet_series_reads_zero() -> None:
    g = fleet_gauges([], [], now=1.0, revision=0, grace_s=40, gone_after_s=90)
    assert set(g.clients.values()) == {0} and len(g.clients) == 4
    assert g.nacking == {"sidecar": 0, "node": 0}
    assert g.approvals_pending == 0 and g.oldest_pending_s == 0.0


async def test_a_push_and_its_ack_are_counted_and_an_invalid_source_shows(fleet: Fleet) -> None:
    replica = fleet.start("r0")
    before = await until(replica.url, "palisade_distributor_bundle_revision", 1)
    assert value(before, "palisade_distributor_pushes_total") == 0
    client, _ = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "rev 1")
        got = await until(
            replica.url, "palisade_distributor_clients", 1, kind="sidecar", state="live"
        )
        assert value(got, "palisade_distributor_pushes_total") == 1
        assert value(got, "palisade_distributor_acks_total", kind="sidecar") == 1
        assert value(got, "palisade_distributor_ack_seconds_count") == 1
        assert value(got, "palisade_distributor_subscribers") == 1
        assert value(got, "palisade_distributor_clients_behind", kind="sidecar") == 0
        assert value(got, "palisade_distributor_source_errors") == 0
        assert value(got, "palisade_distributor_publish_held") == 0
        assert value(got, "palisade_distributor_approvals_pending") == 0
        refused = value(got, "palisade_distributor_audit_refused_total", reason="chain_broken")
        assert refused == 0, "every refusal reason is a series from the start"

        fleet.write_policy(bundle_yaml().replace("decision: allow", "decision: perhaps"))
        held = await until(replica.url, "palisade_distributor_publish_held", 1)
        assert value(held, "palisade_distributor_source_errors") == 1
        assert value(held, "palisade_distributor_bundle_revision") == 1
    finally:
        await client.stop()


async def test_a_nack_is_counted_and_the_client_shows_as_nacking(fleet: Fleet) -> None:
    write_key(fleet.tmp / "rogue.pem")  # a key this client does not trust
    replica = fleet.start("r0", keys=[fleet.tmp / "rogue.pem"])
    client, _ = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.nacks >= 1, 10, "a NACK")
        got = await until(replica.url, "palisade_distributor_clients_nacking", 1, kind="sidecar")
        assert value(got, "palisade_distributor_nacks_total", kind="sidecar") == client.nacks
        assert value(got, "palisade_distributor_acks_total", kind="sidecar") in (None, 0)
        assert value(got, "palisade_distributor_ack_seconds_count") == 0
    finally:
        await client.stop()
