"""Audit records in PostgreSQL: the same behaviour as the SQLite store, on a real server.

A throwaway cluster is created per test session (``initdb`` into a temp dir,
``pg_ctl start`` on a random loopback port, its unix socket in the temp dir) and
every test gets its own database. As root, initdb refuses to run, so the
server's processes run as the ``postgres`` user (or ``nobody``) through
``subprocess``'s ``user=``/``group=``; the data directory is chowned to it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from distributor.store import AuditRow, Store, StoreError
from distributor.store_postgres import (
    PostgresAuditStore,
    SplitStore,
    audit_query_sql,
    open_store,
    redacted,
)
from palisade.audit import to_proto
from palisade.bundle import digest_of
from palisade.v1 import audit_pb2
from tests.distributor.conftest import Fleet
from tests.distributor.helpers import acli, ahttp, cli, eventually, make_client
from tests.distributor.signed_audit import Chain
from tests.harness.process import free_port

pytestmark = pytest.mark.e2e


def _pg_bindir() -> Path:
    candidates: list[Path] = []
    if os.environ.get("PALISADE_PG_BINDIR"):
        candidates.append(Path(os.environ["PALISADE_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl); run `make setup`")


class PgCluster:
    """A real PostgreSQL server in a temp dir, owned by an unprivileged user when run as root."""

    def __init__(self) -> None:
        self.bindir = _pg_bindir()
        # As root the server runs as another user, who must be able to reach the
        # directory: /tmp, not a TMPDIR that may sit inside root's own home.
        where = "/tmp" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="palisade-pg-", dir=where))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.sock.mkdir()
        self.log = self.root / "server.log"
        self.user: int | None = None
        self.group: int | None = None
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pw = pwd.getpwnam("nobody")
            self.user, self.group = pw.pw_uid, pw.pw_gid
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.port = 0
        self._dbs = itertools.count(1)

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        # As root, drop to the server's user with setpriv(1) rather than
        # subprocess's user=/group=: the child then only execs, which stays safe
        # when this test process has other threads (gRPC, asyncio.to_thread).
        drop = (
            ["setpriv", f"--reuid={self.user}", f"--regid={self.group}", "--clear-groups"]
            if self.user is not None
            else []
        )
        return subprocess.run(
            [*drop, str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
        )

    def start(self) -> None:
        out = self._run(
            "initdb", "-D", str(self.data), "-U", "palisade", "-A", "trust", "-E", "UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip
        assert out.returncode == 0, f"initdb failed: {out.stderr}"
        for _ in range(5):
            self.port = free_port()
            if self.serve().returncode == 0:
                return
        raise AssertionError(f"pg_ctl start failed: {self.log.read_text()[-2000:]}")

    def serve(self) -> subprocess.CompletedProcess[str]:
        """Start the server on ``self.port`` (again, after ``halt``)."""
        opts = (
            f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        return self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def halt(self) -> None:
        out = self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        assert out.returncode == 0, out.stderr

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, db: str = "postgres") -> str:
        return f"postgresql://palisade@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        name = f"t{next(self._dbs)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The distributor's store as ``open_store`` builds it, for each audit backend."""
    audit = ""
    if request.param == "postgresql":
        audit = request.getfixturevalue("pg").new_database()
    clock = iter(float(i) for i in itertools.count(10_000))
    s = open_store(tmp_path / "distributor.db", audit, clock=lambda: next(clock))
    try:
        yield s
    finally:
        s.close()


def row(seq: int, **kw: Any) -> AuditRow:
    fields: dict[str, Any] = {
        "source": "side-1",
        "seq": seq,
        "hash": f"h{seq}",
        "time": 1_000.0 + seq,
        "kind": "decision",
        "agent": "sre",
        "tenant": "payments",
        "server": "kubernetes-mcp",
        "tool": "pods_log",
        "decision": "allow",
        "rule_id": "allow-reads",
        "record": b"\x08\x01",
    }
    fields.update(kw)
    doc = {k: v for k, v in fields.items() if k != "record"}
    return AuditRow(**fields, json=json.dumps(doc, sort_keys=True))


def seqs(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(r["source"], r["seq"]) for r in rows]


class TestTheAuditBehaviourIsTheSameOnBothBackends:
    def test_a_resent_batch_is_stored_once_and_only_new_rows_are_returned(
        self, store: Store
    ) -> None:
        first = [row(1), row(2), row(3)]
        assert store.add_audit(first) == first
        again = store.add_audit([row(2), row(3), row(4)])
        assert [r.seq for r in again] == [4]
        assert store.add_audit(first) == []
        assert store.audit_count() == 4

    def test_the_same_seq_from_two_sources_is_two_records(self, store: Store) -> None:
        store.add_audit([row(1, source="a"), row(1, source="b")])
        assert store.audit_count() == 2

    def test_a_duplicate_inside_one_batch_is_stored_once(self, store: Store) -> None:
        new = store.add_audit([row(7), row(7)])
        assert len(new) == 1 and store.audit_count() == 1

    def test_an_empty_batch_stores_nothing(self, store: Store) -> None:
        assert store.add_audit([]) == []
        assert store.audit_count() == 0

    def test_records_come_back_in_time_order_as_stored(self, store: Store) -> None:
        store.add_audit([row(3, time=5.0), row(1, time=9.0), row(2, time=5.0, source="B")])
        out = store.query_audit()
        assert seqs(out) == [("B", 2), ("side-1", 3), ("side-1", 1)]
        assert out[0] == json.loads(row(2, time=5.0, source="B").json)

    def test_newest_gives_the_last_records_still_oldest_first(self, store: Store) -> None:
        store.add_audit([row(i, time=float(i)) for i in range(1, 8)])
        assert [r["seq"] for r in store.query_audit(limit=3)] == [1, 2, 3]
        assert [r["seq"] for r in store.query_audit(limit=3, newest=True)] == [5, 6, 7]
        assert [r["seq"] for r in store.query_audit(since=6.0, limit=3, newest=True)] == [6, 7]

    def test_filters_select_by_agent_tool_decision_source_kind_and_time(self, store: Store) -> None:
        store.add_audit(
            [
                row(1, agent="sre", tool="pods_log", decision="allow", time=1_000.0),
                row(2, agent="sre", tool="resources_delete", decision="deny", time=2_000.0),
                row(3, agent="ops", tool="pods_log", decision="deny", time=3_000.0),
                row(4, agent="sre", decision="require_approval", time=4_000.0, kind="approval"),
                row(5, source="other", time=5_000.0),
            ]
        )

        def q(**kw: Any) -> list[int]:
            return [r["seq"] for r in store.query_audit(**kw)]

        assert q() == [1, 2, 3, 4, 5]
        assert q(agent="sre") == [1, 2, 4, 5]
        assert q(tool="resources_delete", decision="deny") == [2]
        assert q(kind="approval") == [4]
        assert q(source="other") == [5]
        assert q(since=1_500.0, until=3_500.0) == [2, 3]
        assert q(since=4_000.0) == [4, 5]
        assert q(limit=2) == [1, 2]
        assert q(agent="nobody") == []

    def test_a_filter_value_is_data_not_sql(self, store: Store) -> None:
        store.add_audit([row(1, agent="x' OR '1'='1")])
        assert store.query_audit(agent="' OR '1'='1") == []
        assert [r["seq"] for r in store.query_audit(agent="x' OR '1'='1")] == [1]


class TestThePostgresStore:
    def test_audit_goes_to_postgres_and_the_rest_stays_in_sqlite(
        self, pg: PgCluster, tmp_path: Path
    ) -> None:
        dsn = pg.new_database()
        s = open_store(tmp_path / "d.db", dsn)
        try:
            assert isinstance(s, SplitStore)
            s.add_audit([row(1), row(2)])
            rev, new = s.publish(digest_of(b"{}"), "payments", b"{}")
            assert new and s.latest() == rev
        finally:
            s.close()
        with psycopg.connect(dsn) as conn:
            got = conn.execute("SELECT count(*) FROM palisade_audit").fetchone()
            assert got is not None and got[0] == 2
        plain = Store(tmp_path / "d.db")
        try:
            assert plain.audit_count() == 0, "no audit row in the SQLite file"
            assert plain.latest_number() == 1
        finally:
            plain.close()

    def test_records_survive_a_reopen(self, pg: PgCluster) -> None:
        dsn = pg.new_database()
        a = PostgresAuditStore(dsn)
        a.add_audit([row(1)])
        a.close()
        b = PostgresAuditStore(dsn)
        try:
            assert b.audit_count() == 1
            assert b.add_audit([row(1)]) == [], "idempotent across connections"
        finally:
            b.close()

    def test_a_lost_connection_fails_one_call_and_the_next_reconnects(self, pg: PgCluster) -> None:
        dsn = pg.new_database()
        a = PostgresAuditStore(dsn)
        try:
            a.add_audit([row(1)])
            with psycopg.connect(pg.dsn(), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (dsn.rsplit("/", 1)[1],),
                )
            with pytest.raises(StoreError):
                a.add_audit([row(2)])
            assert a.add_audit([row(2)]) == [row(2)]
            assert a.audit_count() == 2
        finally:
            a.close()

    def test_an_unreachable_server_is_a_clear_error_without_the_password(self) -> None:
        port = free_port()
        with pytest.raises(StoreError) as err:
            PostgresAuditStore(f"postgresql://u:hunter2-secret@127.0.0.1:{port}/audit")
        text = str(err.value)
        assert f"127.0.0.1:{port}/audit" in text
        assert "hunter2" not in text
        assert "hunter2" not in repr(err.value.__cause__)

    def test_a_non_postgres_url_is_refused(self) -> None:
        with pytest.raises(StoreError, match="postgresql://"):
            PostgresAuditStore("mysql://u@h/db")

    def test_redacted_drops_user_and_password(self) -> None:
        assert redacted("postgresql://u:pw@db.example:6543/audit") == (
            "postgresql://db.example:6543/audit"
        )

    def test_the_query_is_parameterised(self) -> None:
        sql, args = audit_query_sql(agent="a", since=1.0, until=2.0, limit=5)
        assert "%s" in sql and "'a'" not in sql
        assert args == ["a", 1.0, 2.0, 5]


def _records(chain: Chain) -> list[audit_pb2.AuditRecord]:
    """Three signed, chained records (the distributor verifies what it stores)."""
    out = []
    for seq, (agent, tool, decision) in enumerate(
        [
            ("sre", "pods_log", "allow"),
            ("sre", "resources_delete", "deny"),
            ("ops", "pods_log", "deny"),
        ],
        start=1,
    ):
        record = chain.record(
            time_s=1_000.0 * seq, agent=agent, tool=tool, decision=decision, reason=f"reason {seq}"
        )
        out.append(to_proto(record))
    return out


async def test_a_distributor_with_a_postgres_audit_store_takes_records_and_the_cli_reads_them(
    fleet: Fleet, pg: PgCluster
) -> None:
    dsn = await asyncio.to_thread(pg.new_database)
    r0 = fleet.start("r0", extra=["--audit-store", dsn])
    chain = Chain("side")
    client, _ = make_client(
        fleet.tmp, "side", [r0.target], fleet.trusted, audit_keys=(chain.key(),)
    )
    await client.start()
    try:
        client.record_audit(_records(chain))
        await eventually(lambda: client.spool.pending_bytes() == 0, 15, "audit shipped")

        async def query(*args: str) -> list[int]:
            out = await acli(
                "audit", "query", "--kind", "decision", "-o", "json", "--url", r0.url, *args
            )
            assert out.returncode == 0, out.stderr
            return [int(r["seq"]) for r in json.loads(out.stdout)]

        assert await query() == [1, 2, 3]
        assert await query("--agent", "sre") == [1, 2]
        assert await query("--decision", "deny", "--since", "2500") == [3]
    finally:
        await client.stop()
    r0.stop()

    def in_postgres() -> int:
        with psycopg.connect(dsn) as conn:
            got = conn.execute("SELECT count(*) FROM palisade_audit WHERE source='side'").fetchone()
            return int(got[0]) if got else -1

    assert await asyncio.to_thread(in_postgres) == 3
    sqlite = Store(fleet.store)
    try:
        assert sqlite.audit_count() == 0
        assert sqlite.latest_number() == 1, "bundle history stays in the SQLite file"
    finally:
        sqlite.close()


async def test_a_distributor_whose_audit_store_is_down_refuses_to_start_without_the_password(
    fleet: Fleet,
) -> None:
    dsn = f"postgresql://u:hunter2-secret@127.0.0.1:{free_port()}/audit"
    with pytest.raises(RuntimeError) as err:
        fleet.start("r0", extra=["--audit-store", dsn])
    assert "audit store postgresql://127.0.0.1" in str(err.value)
    assert "hunter2" not in str(err.value)


async def test_the_audit_store_can_come_from_the_environment(
    fleet: Fleet, pg: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    dsn = await asyncio.to_thread(pg.new_database)
    monkeypatch.setenv("PALISADE_AUDIT_STORE", dsn)
    r0 = fleet.start("r0")
    chain = Chain("side")
    client, _ = make_client(
        fleet.tmp, "side", [r0.target], fleet.trusted, audit_keys=(chain.key(),)
    )
    await client.start()
    try:
        client.record_audit(_records(chain)[:1])
        await eventually(lambda: client.spool.pending_bytes() == 0, 15, "audit shipped")
    finally:
        await client.stop()
    with psycopg.connect(dsn) as conn:
        got = conn.execute("SELECT count(*) FROM palisade_audit").fetchone()
        assert got is not None and got[0] == 1


async def test_while_postgres_is_down_records_wait_in_the_client_spool_and_arrive_once_after(
    fleet: Fleet,
) -> None:
    own = PgCluster()  # its own server: this test stops it
    try:
        await asyncio.to_thread(own.start)
        dsn = await asyncio.to_thread(own.new_database)
        r0 = fleet.start("r0", extra=["--audit-store", dsn])
        chain = Chain("side")
        client, _ = make_client(
            fleet.tmp, "side", [r0.target], fleet.trusted, audit_keys=(chain.key(),)
        )
        await client.start()
        try:
            batch = _records(chain)
            client.record_audit(batch[:1])
            await eventually(lambda: client.spool.pending_bytes() == 0, 15, "first record")
            await asyncio.to_thread(own.halt)
            client.record_audit(batch[1:])
            await asyncio.sleep(1.0)
            assert client.spool.pending_bytes() > 0, "refused batch stays in the spool"
            assert r0.proc.poll() is None, "the distributor keeps running"
            status, _ = await ahttp("GET", r0.url + "/readyz")
            assert status == 200
            out = await asyncio.to_thread(own.serve)
            assert out.returncode == 0, out.stderr
            await eventually(lambda: client.spool.pending_bytes() == 0, 20, "spool drained")
            got = await acli("audit", "query", "-o", "json", "--url", r0.url)
            assert got.returncode == 0, got.stderr
            assert [int(r["seq"]) for r in json.loads(got.stdout)] == [1, 2, 3]
        finally:
            await client.stop()
        assert "hunter2" not in r0.log_path.read_text()
    finally:
        await asyncio.to_thread(own.stop)


def test_an_audit_store_that_is_not_a_postgres_url_is_refused_at_start(fleet: Fleet) -> None:
    out = cli(
        "distributor", "--policy-dir", str(fleet.policy_dir), "--store", str(fleet.store),
        "--signing-key", str(fleet.key_path), "--audit-store", "/var/lib/audit.db",
    )  # fmt: skip
    assert out.returncode == 2
    assert "--audit-store must be a postgresql:// URL" in out.stderr
