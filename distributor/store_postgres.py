"""Audit records in PostgreSQL (``--audit-store postgresql://...``), the rest in SQLite.

Audit is the one part of the store that grows without bound: every sidecar
ships every decision. Bundle history, the fleet table and approvals stay small
(hundreds to thousands of rows) and keep their leaderless ``BEGIN IMMEDIATE``
protocol in the SQLite file. So only audit moves: ``SplitStore`` is a
``Store`` whose ``add_audit`` / ``query_audit`` / ``audit_count`` go to
``PostgresAuditStore``, and every caller (gRPC intake, the HTTP audit API,
administrative records) keeps calling the same three methods.

The audit key registry and the chain heads the intake verifies against
(``register_audit_keys``, ``admit_audit``, ``audit_keys``, ``audit_chains``,
``audit_chain``) live in PostgreSQL too, next to the records they verify.

Behaviour matches the SQLite table exactly: the key is (source, seq, hash), a
re-sent record is ignored (``ON CONFLICT DO NOTHING``) and not returned as new
(so it is never forwarded twice), the same filters, ``ORDER BY time, source,
seq`` (source compared bytewise, as SQLite does) and ``LIMIT``.

The connection is psycopg 3, one per replica, used from the store's single
worker thread. A broken connection (server restart, network) fails that one
call; the intake answers ``UNAVAILABLE`` and the client keeps the batch in its
spool; the next call reconnects. Connection strings are never logged or put in
errors: they may hold a password.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from distributor.store import (
    AuditCandidate,
    AuditIntake,
    AuditRow,
    Store,
    StoreError,
    admit_rows,
)
from palisade.audit import intake

SCHEMA = """
CREATE TABLE IF NOT EXISTS palisade_audit (
  source TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
  time DOUBLE PRECISION, kind TEXT, agent TEXT, tenant TEXT, server TEXT, tool TEXT,
  decision TEXT, rule_id TEXT, record BYTEA, json TEXT NOT NULL,
  received DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (source, seq, hash)
);
CREATE INDEX IF NOT EXISTS palisade_audit_time ON palisade_audit (time);
CREATE INDEX IF NOT EXISTS palisade_audit_agent_time ON palisade_audit (agent, time);
ALTER TABLE palisade_audit ADD COLUMN IF NOT EXISTS chain BIGINT NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS palisade_audit_source_hash ON palisade_audit (source, hash);
CREATE TABLE IF NOT EXISTS palisade_audit_keys (
  key_id TEXT PRIMARY KEY, source TEXT NOT NULL, client TEXT NOT NULL DEFAULT '',
  registered DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS palisade_audit_keys_source ON palisade_audit_keys (source);
CREATE TABLE IF NOT EXISTS palisade_audit_heads (
  source TEXT PRIMARY KEY, chain BIGINT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL,
  updated DOUBLE PRECISION NOT NULL
);
"""

INSERT = (
    "INSERT INTO palisade_audit(source, seq, hash, time, kind, agent, tenant, server,"
    " tool, decision, rule_id, record, json, received, chain)"
    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    " ON CONFLICT DO NOTHING RETURNING 1"
)

FILTER_COLUMNS = ("agent", "tool", "decision", "source", "kind")


def is_postgres_dsn(value: str) -> bool:
    """True for a ``postgresql://`` / ``postgres://`` URL (the accepted ``--audit-store`` forms)."""
    return value.startswith(("postgresql://", "postgres://"))


def redacted(dsn: str) -> str:
    """The connection target without credentials, for logs and errors."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable connection string>"
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    return f"postgresql://{host}:{port}/{params.get('dbname') or ''}"


def audit_query_sql(
    *,
    agent: str = "",
    tool: str = "",
    decision: str = "",
    source: str = "",
    kind: str = "",
    since: float = 0.0,
    until: float = 0.0,
    limit: int = 1000,
    newest: bool = False,
) -> tuple[str, list[Any]]:
    """The SELECT for ``query_audit``'s filters (pure; column names are constants);
    ``newest``: the last ``limit`` records instead of the first (still oldest first)."""
    clauses: list[str] = []
    args: list[Any] = []
    values = {"agent": agent, "tool": tool, "decision": decision, "source": source, "kind": kind}
    for col in FILTER_COLUMNS:
        if values[col]:
            clauses.append(f"{col} = %s")
            args.append(values[col])
    if since:
        clauses.append("time >= %s")
        args.append(since)
    if until:
        clauses.append("time < %s")
        args.append(until)
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    args.append(max(0, limit))
    order = ' ORDER BY time, source COLLATE "C", seq'
    if not newest:
        return f"SELECT json FROM palisade_audit{where}{order} LIMIT %s", args  # noqa: S608
    last = ' ORDER BY time DESC, source COLLATE "C" DESC, seq DESC'
    inner = f"SELECT json, time, source, seq FROM palisade_audit{where}{last} LIMIT %s"  # noqa: S608
    sql = f"SELECT json FROM ({inner}) AS newest{order}"  # noqa: S608
    return sql, args


class PostgresAuditStore:
    """``add_audit`` / ``query_audit`` / ``audit_count`` on a PostgreSQL table."""

    def __init__(
        self, dsn: str, *, clock: Callable[[], float] = time.time, connect_timeout: int = 10
    ) -> None:
        if not is_postgres_dsn(dsn):
            raise StoreError("audit store must be a postgresql:// URL")
        self._dsn = dsn
        self.target = redacted(dsn)
        self.clock = clock
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute(SCHEMA)
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None

    def __repr__(self) -> str:
        return f"PostgresAuditStore({self.target})"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self.connect_timeout
            )
        except psycopg.Error as exc:
            self._conn = None
            raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def add_audit(self, rows: Sequence[AuditRow]) -> list[AuditRow]:
        """Store idempotently; returns the rows that were new (for forwarding)."""
        if not rows:
            return []
        now = self.clock()
        params = [r.columns(now) for r in rows]
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(INSERT, params, returning=True)
                    inserted: list[bool] = []
                    while True:
                        inserted.append(cur.fetchone() is not None)
                        if not cur.nextset():
                            break
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [r for r, new in zip(rows, inserted, strict=True) if new]

    def register_audit_keys(self, source: str, key_ids: Sequence[str], client: str) -> list[str]:
        """As ``Store.register_audit_keys``: kept forever, one source per key."""
        now = self.clock()
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    for kid in key_ids:
                        conn.execute(
                            "INSERT INTO palisade_audit_keys(key_id, source, client, registered)"
                            " VALUES (%s,%s,%s,%s) ON CONFLICT (key_id) DO NOTHING",
                            (kid, source, client, now),
                        )
                        row = conn.execute(
                            "SELECT source FROM palisade_audit_keys WHERE key_id=%s", (kid,)
                        ).fetchone()
                        if row is not None and row[0] != source:
                            raise StoreError(f"audit key {kid} is registered for another source")
                    rows = conn.execute(
                        "SELECT key_id FROM palisade_audit_keys WHERE source=%s"
                        " ORDER BY registered, key_id",
                        (source,),
                    ).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [str(r[0]) for r in rows]

    def audit_keys(self, source: str = "") -> list[dict[str, Any]]:
        sql = "SELECT key_id, source, client, registered FROM palisade_audit_keys"
        args: tuple[Any, ...] = ()
        if source:
            sql += " WHERE source=%s"
            args = (source,)
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    sql + ' ORDER BY source COLLATE "C", registered, key_id', args
                ).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [{"key_id": r[0], "source": r[1], "client": r[2], "registered": r[3]} for r in rows]

    def admit_audit(self, source: str, batch: Sequence[AuditCandidate]) -> AuditIntake:
        """As ``Store.admit_audit``; a transaction-scoped advisory lock on the source
        serialises replicas admitting the same source."""
        now = self.clock()
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (source,))
                    registered = {
                        str(r[0])
                        for r in conn.execute(
                            "SELECT key_id FROM palisade_audit_keys WHERE source=%s", (source,)
                        )
                    }
                    row = conn.execute(
                        "SELECT chain, seq, hash FROM palisade_audit_heads WHERE source=%s",
                        (source,),
                    ).fetchone()
                    if row is None:  # records stored before heads were kept
                        row = conn.execute(
                            "SELECT chain, seq, hash FROM palisade_audit"
                            " WHERE source=%s AND hash != ''"
                            " ORDER BY chain DESC, seq DESC LIMIT 1",
                            (source,),
                        ).fetchone()
                    head = intake.Head(int(row[0]), int(row[1]), str(row[2])) if row else None
                    hashes = [c[1].hash for c in batch if c[1].hash]
                    stored = {
                        str(r[0])
                        for r in conn.execute(
                            "SELECT hash FROM palisade_audit WHERE source=%s AND hash = ANY(%s)",
                            (source, hashes),
                        )
                    }
                    verdict, rows = admit_rows(
                        batch, head=head, registered=registered, stored=stored
                    )
                    new: list[AuditRow] = []
                    for r in rows:
                        if conn.execute(INSERT, r.columns(now)).fetchone() is not None:
                            new.append(r)
                    if verdict.head is not None and verdict.head != head:
                        h = verdict.head
                        conn.execute(
                            "INSERT INTO palisade_audit_heads(source, chain, seq, hash, updated)"
                            " VALUES (%s,%s,%s,%s,%s) ON CONFLICT (source) DO UPDATE SET"
                            " chain=EXCLUDED.chain, seq=EXCLUDED.seq, hash=EXCLUDED.hash,"
                            " updated=EXCLUDED.updated",
                            (source, h.chain, h.seq, h.hash, now),
                        )
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return AuditIntake(verdict, new)

    def audit_chains(self) -> list[dict[str, Any]]:
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT source, chain, count(*), min(seq), max(seq) FROM palisade_audit"
                    " WHERE hash != '' GROUP BY source, chain"
                    ' ORDER BY source COLLATE "C", chain'
                ).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [
            {"source": r[0], "chain": r[1], "records": r[2], "first_seq": r[3], "last_seq": r[4]}
            for r in rows
        ]

    def audit_chain(self, source: str, chain: int, after: int, limit: int) -> list[bytes]:
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(
                    "SELECT record FROM palisade_audit WHERE source=%s AND chain=%s AND seq>%s"
                    " AND hash != '' ORDER BY seq LIMIT %s",
                    (source, chain, after, limit),
                ).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [bytes(r[0]) for r in rows]

    def query_audit(self, **filters: Any) -> list[dict[str, Any]]:
        sql, args = audit_query_sql(**filters)
        with self._lock:
            conn = self._connection()
            try:
                rows = conn.execute(sql, args).fetchall()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return [json.loads(r[0]) for r in rows]

    def audit_count(self) -> int:
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute("SELECT count(*) FROM palisade_audit").fetchone()
            except psycopg.Error as exc:
                raise StoreError(f"audit store {self.target}: {_reason(exc)}") from None
        return int(row[0]) if row else 0


def _reason(exc: psycopg.Error) -> str:
    """The server's or libpq's message, first line only (no connection string)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class SplitStore(Store):
    """The SQLite ``Store`` with its audit methods served by PostgreSQL."""

    def __init__(
        self, path: str | Path, audit: PostgresAuditStore, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(path, clock=clock)
        self.audit = audit

    def close(self) -> None:
        try:
            self.audit.close()
        finally:
            super().close()

    def add_audit(self, rows: Sequence[AuditRow]) -> list[AuditRow]:
        return self.audit.add_audit(rows)

    def query_audit(
        self,
        *,
        agent: str = "",
        tool: str = "",
        decision: str = "",
        source: str = "",
        kind: str = "",
        since: float = 0.0,
        until: float = 0.0,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[dict[str, Any]]:
        return self.audit.query_audit(
            agent=agent,
            tool=tool,
            decision=decision,
            source=source,
            kind=kind,
            since=since,
            until=until,
            limit=limit,
            newest=newest,
        )

    def audit_count(self) -> int:
        return self.audit.audit_count()

    def register_audit_keys(self, source: str, key_ids: Sequence[str], client: str) -> list[str]:
        return self.audit.register_audit_keys(source, key_ids, client)

    def audit_keys(self, source: str = "") -> list[dict[str, Any]]:
        return self.audit.audit_keys(source)

    def admit_audit(self, source: str, batch: Sequence[AuditCandidate]) -> AuditIntake:
        return self.audit.admit_audit(source, batch)

    def audit_chains(self) -> list[dict[str, Any]]:
        return self.audit.audit_chains()

    def audit_chain(self, source: str, chain: int, after: int, limit: int) -> list[bytes]:
        return self.audit.audit_chain(source, chain, after, limit)


def open_store(
    path: str | Path, audit_store: str = "", *, clock: Callable[[], float] = time.time
) -> Store:
    """The SQLite store, with audit in PostgreSQL when ``audit_store`` is a postgresql:// URL."""
    if not audit_store:
        return Store(path, clock=clock)
    return SplitStore(path, PostgresAuditStore(audit_store, clock=clock), clock=clock)
