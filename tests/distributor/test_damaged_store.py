"""A damaged revision in the store: never served, never advertised, never fatal.

A revision's document cut short (a torn write, a disk error) is what another
replica or a crash can leave behind. Real replicas, real clients, the real file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from tests.distributor.conftest import Fleet
from tests.distributor.helpers import ahttp, bundle_yaml, eventually, make_client


def _cut_short(store: Path, revision: int) -> None:
    """Truncate the stored document of ``revision`` to half its length."""
    db = sqlite3.connect(store)
    try:
        (doc,) = db.execute(
            "SELECT document FROM revisions WHERE revision=?", (revision,)
        ).fetchone()
        db.execute(
            "UPDATE revisions SET document=? WHERE revision=?", (doc[: len(doc) // 2], revision)
        )
        db.commit()
    finally:
        db.close()


def _insert_torn_copy(store: Path, of: int, as_revision: int) -> None:
    """What a replica's torn write leaves: a new number, a new digest, half a document."""
    db = sqlite3.connect(store)
    try:
        row = db.execute(
            "SELECT name, document, created FROM revisions WHERE revision=?", (of,)
        ).fetchone()
        db.execute(
            "INSERT INTO revisions(revision, digest, name, document, created, origin, author)"
            " VALUES (?,?,?,?,?,?,?)",
            (as_revision, "sha256:" + "ab" * 32, row[0], row[1][:-40], row[2] + 1, "source", ""),
        )
        db.commit()
    finally:
        db.close()


async def _readyz_revision(url: str) -> int:
    _, body = await ahttp("GET", url + "/readyz")
    return int(body["revision"])


async def test_a_damaged_new_revision_is_neither_advertised_nor_served_by_a_running_replica(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    first, rec = make_client(fleet.tmp, "c-before", [replica.target], fleet.trusted)
    await first.start()
    late = None
    try:
        await eventually(lambda: first.status.revision == 1, 10, "rev 1")
        digest_1 = first.status.digest
        _insert_torn_copy(fleet.store, of=1, as_revision=2)
        await asyncio.sleep(1.5)  # several store polls
        assert await _readyz_revision(replica.url) == 1, "revision 2 is not advertised"
        late, late_rec = make_client(fleet.tmp, "c-after", [replica.target], fleet.trusted)
        await late.start()
        await eventually(lambda: late is not None and late.status.revision == 1, 10, "rev 1")
        assert late.status.digest == digest_1, "revision 1's content under revision 1's number"
        assert rec.revisions == [1] and late_rec.revisions == [1]
        log = replica.log_path.read_text()
        assert "revision 2 is damaged and is skipped, never served" in log
        assert log.count("revision 2 is damaged") == 1, "reported once, not once per poll"
        _, body = await ahttp("GET", replica.url + "/v1/bundles")
        damaged = {b["revision"]: b.get("damaged", "") for b in body["bundles"]}
        assert "does not match its digest" in damaged[2]
        assert damaged[1] == ""
        status, err = await ahttp(
            "POST", replica.url + "/v1/bundles/rollback", {"to": 2, "by": "test"}
        )
        assert status == 409 and "revision 2 is damaged" in err["error"]
    finally:
        await first.stop()
        if late is not None:
            await late.stop()


async def test_a_replica_restarts_on_a_damaged_latest_revision_and_republishes_the_sources(
    fleet: Fleet,
) -> None:
    replica = fleet.start("r0")
    client, rec = make_client(fleet.tmp, "c0", [replica.target], fleet.trusted)
    await client.start()
    try:
        await eventually(lambda: client.status.revision == 1, 10, "rev 1")
        fleet.write_policy(bundle_yaml(reason="changed"))
        await eventually(lambda: client.status.revision == 2, 10, "rev 2")
        replica.stop()
        _cut_short(fleet.store, 2)
        again = fleet.start("r0-again", grpc_port=replica.grpc_port)
        log = again.log_path.read_text()
        assert "revision 2 is damaged and is skipped, never served" in log
        # The sources still say what revision 2 said: published again, intact, as 3.
        await eventually(lambda: client.status.revision == 3, 15, "rev 3")
        assert client.active is not None
        rules = client.active.document["spec"]["rules"]
        assert rules[0]["reason"] == "changed"
        assert await _readyz_revision(again.url) == 3
        _, body = await ahttp("GET", again.url + "/v1/bundles")
        assert [b["revision"] for b in body["bundles"]] == [3, 2, 1], "number 2 is not reused"
        fresh, fresh_rec = make_client(fleet.tmp, "c-fresh", [again.target], fleet.trusted)
        await fresh.start()
        try:
            await eventually(lambda: fresh.status.revision == 3, 10, "fresh client on rev 3")
            assert fresh_rec.revisions == [3]
        finally:
            await fresh.stop()
        assert rec.revisions == [1, 2, 3]
    finally:
        await client.stop()
