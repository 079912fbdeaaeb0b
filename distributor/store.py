"""The distributor's embedded store (SQLite): bundle history, fleet, approvals, audit.

Every replica opens the same database (a file on a shared volume, or one
replica's in a single-replica install). Revision numbers are agreed through
it without a leader: ``publish`` runs in one ``BEGIN IMMEDIATE`` transaction
that compares the compiled digest with what the sources last produced and with
the latest revision, and inserts ``latest + 1`` only when the content is new.
Two replicas compiling the same sources therefore end on the same revision
with the same digest; whichever commits second finds it already there.

History is append-only: a rollback inserts the old document as a new revision.

Every document is verified when it is read: its sha256 must be the digest stored
with it and it must parse. A damaged revision (a write cut short, a disk error)
is skipped with one clear error in the log: ``latest`` returns the newest intact
revision, a rollback to a damaged one is refused, ``history`` marks it, and its
number is never reused (the next publication is ``max + 1``, the same content
again when the sources still produce it). A replica therefore neither serves old
content under a new number nor fails to start.

All methods are synchronous and short; the server calls them from one worker
thread (``AsyncStore``) so the event loop never waits on a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from palisade.audit import intake
from palisade.bundle import digest_of

T = TypeVar("T")

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS revisions (
  revision INTEGER PRIMARY KEY,
  digest TEXT NOT NULL,
  name TEXT NOT NULL,
  document BLOB NOT NULL,
  created REAL NOT NULL,
  origin TEXT NOT NULL,
  author TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS clients (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL, node TEXT, namespace TEXT, pod TEXT, tenant TEXT, server TEXT,
  version TEXT, replica TEXT, connected INTEGER NOT NULL DEFAULT 0,
  revision INTEGER NOT NULL DEFAULT 0, digest TEXT NOT NULL DEFAULT '',
  nack_revision INTEGER NOT NULL DEFAULT 0, nack_error TEXT NOT NULL DEFAULT '',
  health TEXT NOT NULL DEFAULT '', counters TEXT NOT NULL DEFAULT '{}',
  summary TEXT NOT NULL DEFAULT '{}', connected_at REAL, last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY,
  client_id TEXT NOT NULL, created REAL NOT NULL,
  status TEXT NOT NULL DEFAULT 'pending',
  agent TEXT, server TEXT, tool TEXT, tenant TEXT, rule_id TEXT, reason TEXT,
  call_digest TEXT NOT NULL, request BLOB NOT NULL, arguments TEXT NOT NULL DEFAULT '{}',
  by TEXT NOT NULL DEFAULT '', comment TEXT NOT NULL DEFAULT '',
  decided_at REAL, expires REAL, delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS audit (
  source TEXT NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
  time REAL, kind TEXT, agent TEXT, tenant TEXT, server TEXT, tool TEXT,
  decision TEXT, rule_id TEXT, record BLOB, json TEXT NOT NULL, received REAL NOT NULL,
  PRIMARY KEY (source, seq, hash)
);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time);
CREATE TABLE IF NOT EXISTS audit_keys (
  key_id TEXT PRIMARY KEY, source TEXT NOT NULL, client TEXT NOT NULL DEFAULT '',
  registered REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_keys_source ON audit_keys (source);
CREATE TABLE IF NOT EXISTS audit_heads (
  source TEXT PRIMARY KEY, chain INTEGER NOT NULL, seq INTEGER NOT NULL, hash TEXT NOT NULL,
  updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_undelivered ON approvals (delivered, status);
"""


#: One row per person's answer to an approval request (the approvals part of the
#: store; ``approvals.required`` is added to stores made before it existed).
APPROVAL_VOTES_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_votes (
  approval_id TEXT NOT NULL, username TEXT NOT NULL, uid TEXT NOT NULL DEFAULT '',
  groups TEXT NOT NULL DEFAULT '[]', authenticated INTEGER NOT NULL DEFAULT 1,
  approve INTEGER NOT NULL, comment TEXT NOT NULL DEFAULT '', at REAL NOT NULL,
  PRIMARY KEY (approval_id, username)
);
"""


class StoreError(Exception):
    """A store operation was refused (unknown revision, approval already decided, ...)."""


@dataclass(frozen=True, slots=True)
class Revision:
    revision: int
    digest: str
    name: str
    document: bytes
    created: float
    origin: str
    author: str

    def damage(self) -> str:
        """Why the stored document cannot be served ("" when it is intact)."""
        actual = digest_of(self.document)
        if actual != self.digest:
            return (
                f"stored document ({len(self.document)} bytes) does not match its digest"
                f" {self.digest} (it hashes to {actual})"
            )
        try:
            doc = json.loads(self.document)
        except (ValueError, UnicodeDecodeError) as exc:
            return f"stored document is not JSON: {exc}"
        if not isinstance(doc, dict):
            return "stored document is not a JSON object"
        return ""

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "digest": self.digest,
            "name": self.name,
            "created": self.created,
            "origin": self.origin,
            "author": self.author,
        }
        problem = self.damage()
        if problem:
            out["damaged"] = problem
        return out


@dataclass(frozen=True, slots=True)
class AuditRow:
    source: str
    seq: int
    hash: str
    time: float
    kind: str
    agent: str
    tenant: str
    server: str
    tool: str
    decision: str
    rule_id: str
    record: bytes
    json: str
    #: which of the source's chains (1, 2, ... a writer that lost its log starts the next)
    chain: int = 1

    def columns(self, received: float) -> tuple[Any, ...]:
        """Values in the audit table's column order (both stores insert these)."""
        return (
            self.source, self.seq, self.hash, self.time, self.kind, self.agent, self.tenant,
            self.server, self.tool, self.decision, self.rule_id, self.record, self.json, received,
            self.chain,
        )  # fmt: skip


#: A shipped record as the writer wrote it (``palisade.audit.proto.from_proto``) and its row.
AuditCandidate = tuple[Mapping[str, Any], AuditRow]


def admit_rows(
    batch: Sequence[AuditCandidate],
    *,
    head: intake.Head | None,
    registered: Collection[str],
    stored: Collection[str],
) -> tuple[intake.Admission, list[AuditRow]]:
    """The verifier's verdict on one source's batch and the rows to insert (both stores)."""
    verdict = intake.admit([c[0] for c in batch], head=head, registered=registered, stored=stored)
    rows = [dataclasses.replace(batch[i][1], chain=chain) for i, chain in verdict.accepted]
    return verdict, rows


@dataclass
class AuditIntake:
    """What ``admit_audit`` did with a batch."""

    verdict: intake.Admission
    new: list[AuditRow]


class Store:
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = str(path)
        self.clock = clock
        self._lock = threading.Lock()
        self.db = sqlite3.connect(
            self.path, timeout=30, check_same_thread=False, isolation_level=None
        )
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._approvals_schema()
        self._audit_schema()
        #: Damaged revisions already reported (each is logged once, not once per poll).
        self._reported: set[int] = set()

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self.db)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result

    # -- bundles -----------------------------------------------------------
    @staticmethod
    def _revision(row: sqlite3.Row | None) -> Revision | None:
        if row is None:
            return None
        return Revision(
            row["revision"],
            row["digest"],
            row["name"],
            bytes(row["document"]),
            row["created"],
            row["origin"],
            row["author"],
        )

    def _check(self, rev: Revision | None) -> Revision | None:
        """``rev`` when its document is intact; None (reported once) when it is damaged."""
        if rev is None:
            return None
        problem = rev.damage()
        if not problem:
            return rev
        if rev.revision not in self._reported:
            self._reported.add(rev.revision)
            log.error(
                "revision %d is damaged and is skipped, never served: %s",
                rev.revision,
                problem,
                extra={"revision": rev.revision, "digest": rev.digest},
            )
        return None

    def _latest_intact(self, db: sqlite3.Connection) -> Revision | None:
        for row in db.execute("SELECT * FROM revisions ORDER BY revision DESC"):
            rev = self._check(self._revision(row))
            if rev is not None:
                return rev
        return None

    def latest(self) -> Revision | None:
        """The newest revision whose document is intact (damaged ones are skipped)."""
        with self._lock:
            return self._latest_intact(self.db)

    def latest_number(self) -> int:
        with self._lock:
            row = self.db.execute("SELECT max(revision) FROM revisions").fetchone()
        return int(row[0] or 0)

    def get(self, revision: int) -> Revision | None:
        """Revision ``revision`` if it exists and is intact."""
        with self._lock:
            row = self.db.execute(
                "SELECT * FROM revisions WHERE revision=?", (revision,)
            ).fetchone()
            return self._check(self._revision(row))

    def history(self, limit: int = 50) -> list[Revision]:
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM revisions ORDER BY revision DESC LIMIT ?", (limit,)
            ).fetchall()
        return [r for r in (self._revision(row) for row in rows) if r is not None]

    def publish(self, digest: str, name: str, document: bytes) -> tuple[Revision, bool]:
        """Record compiled source content; returns (current revision, whether it is new)."""

        def run(db: sqlite3.Connection) -> tuple[Revision, bool]:
            seen = db.execute("SELECT value FROM meta WHERE key='source_digest'").fetchone()
            top = int(db.execute("SELECT max(revision) FROM revisions").fetchone()[0] or 0)
            latest = self._latest_intact(db)
            # Sources unchanged since they were last published: nothing new (a
            # rollback stands), unless what they produced was lost to damage.
            unchanged = (
                seen is not None and seen[0] == digest and latest is not None
                and latest.revision == top
            )  # fmt: skip
            if latest is not None and (unchanged or latest.digest == digest):
                db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('source_digest', ?)", (digest,)
                )
                return latest, False
            rev = Revision(
                top + 1,
                digest,
                name,
                document,
                self.clock(),
                "source",
                "",
            )
            self._insert(db, rev)
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('source_digest', ?)", (digest,)
            )
            return rev, True

        return self._tx(run)

    def rollback(self, to: int, author: str) -> tuple[Revision, bool]:
        """Re-publish revision ``to`` as a new revision (unless it is already the latest)."""

        def run(db: sqlite3.Connection) -> tuple[Revision, bool]:
            old = self._revision(
                db.execute("SELECT * FROM revisions WHERE revision=?", (to,)).fetchone()
            )
            if old is None:
                raise StoreError(f"no revision {to} in history")
            problem = old.damage()
            if problem:
                raise StoreError(f"revision {to} is damaged and cannot be published: {problem}")
            top = int(db.execute("SELECT max(revision) FROM revisions").fetchone()[0] or 0)
            latest = self._latest_intact(db)
            assert latest is not None
            if latest.digest == old.digest and latest.revision == top:
                return latest, False
            rev = Revision(
                top + 1,
                old.digest,
                old.name,
                old.document,
                self.clock(),
                f"rollback:{to}",
                author,
            )
            self._insert(db, rev)
            return rev, True

        return self._tx(run)

    @staticmethod
    def _insert(db: sqlite3.Connection, rev: Revision) -> None:
        db.execute(
            "INSERT INTO revisions(revision, digest, name, document, created, origin, author)"
            " VALUES (?,?,?,?,?,?,?)",
            (rev.revision, rev.digest, rev.name, rev.document, rev.created, rev.origin, rev.author),
        )

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- fleet -------------------------------------------------------------
    def upsert_clients(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        cols = (
            "id",
            "kind",
            "node",
            "namespace",
            "pod",
            "tenant",
            "server",
            "version",
            "replica",
            "connected",
            "revision",
            "digest",
            "nack_revision",
            "nack_error",
            "health",
            "counters",
            "summary",
            "connected_at",
            "last_seen",
        )
        # Column names are the constants above; values are bound parameters.
        sql = (
            f"INSERT OR REPLACE INTO clients({', '.join(cols)})"  # noqa: S608
            f" VALUES ({', '.join('?' for _ in cols)})"
        )
        values = [
            tuple(json.dumps(r[c]) if c in ("counters", "summary") else r[c] for c in cols)
            for r in rows
        ]
        self._tx(lambda db: db.executemany(sql, values))

    def disconnect_replica(self, replica: str) -> None:
        with self._lock:
            self.db.execute(
                "UPDATE clients SET connected=0 WHERE replica=? AND connected=1", (replica,)
            )

    def clients(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM clients ORDER BY kind, id").fetchall()
        out = []
        for row in rows:
            d = dict(row)
            d["counters"] = json.loads(d["counters"])
            d["summary"] = json.loads(d["summary"])
            d["connected"] = bool(d["connected"])
            out.append(d)
        return out

    # -- approvals ---------------------------------------------------------
    def _approvals_schema(self) -> None:
        self.db.executescript(APPROVAL_VOTES_SCHEMA)
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(approvals)")}
        if "required" not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another replica was first
                self.db.execute(
                    "ALTER TABLE approvals ADD COLUMN required INTEGER NOT NULL DEFAULT 1"
                )

    def add_approval(self, row: Mapping[str, Any]) -> bool:
        """Store a new pending request; False when that id is already known (a decided
        one is then delivered again to the client that asked)."""
        with self._lock:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO approvals(id, client_id, created, agent, server, tool,"
                " tenant, rule_id, reason, call_digest, request, arguments, required)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row["id"],
                    row["client_id"],
                    self.clock(),
                    row["agent"],
                    row["server"],
                    row["tool"],
                    row["tenant"],
                    row["rule_id"],
                    row["reason"],
                    row["call_digest"],
                    row["request"],
                    json.dumps(row["arguments"]),
                    max(int(row.get("required") or 1), 1),
                ),
            )
            if cur.rowcount == 1:
                return True
            # Asked again (the client re-sends what it holds unanswered after a
            # reconnect): an answer it may never have received goes out again.
            self.db.execute(
                "UPDATE approvals SET delivered=0"
                " WHERE id=? AND client_id=? AND status != 'pending'",
                (row["id"], row["client_id"]),
            )
            return False

    def decide_approval(
        self,
        approval_id: str,
        approved: bool,
        approver: Mapping[str, Any],
        comment: str,
        window_s: float,
    ) -> dict[str, Any]:
        """Record one person's answer; returns the request as it now stands.

        ``approver`` is who answered (``username``, ``uid``, ``groups``,
        ``authenticated``). A denial by anyone denies. An approval counts once per
        person; the request is approved when ``required`` distinct people have
        approved, and stays pending until then. The same person again is refused.
        """
        username = str(approver["username"])

        def run(db: sqlite3.Connection) -> dict[str, Any]:
            row = db.execute("SELECT * FROM approvals WHERE id=?", (approval_id,)).fetchone()
            if row is None:
                raise StoreError(f"no approval {approval_id!r}")
            if row["status"] != "pending":
                raise StoreError(f"approval {approval_id!r} is already {row['status']}")
            required = max(int(row["required"] or 1), 1)
            earlier = db.execute(
                "SELECT 1 FROM approval_votes WHERE approval_id=? AND username=?",
                (approval_id, username),
            ).fetchone()
            if earlier is not None and approved:
                have = self._votes(db, approval_id)
                raise StoreError(
                    f"{username} has already approved {approval_id!r}; it needs"
                    f" {required - len(have)} more approval(s) by other people"
                )
            now = self.clock()
            db.execute(
                "INSERT OR REPLACE INTO approval_votes(approval_id, username, uid, groups,"
                " authenticated, approve, comment, at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    approval_id,
                    username,
                    str(approver.get("uid") or ""),
                    json.dumps(list(approver.get("groups") or ())),
                    1 if approver.get("authenticated", True) else 0,
                    1 if approved else 0,
                    comment,
                    now,
                ),
            )
            yes = [v["username"] for v in self._votes(db, approval_id) if v["approve"]]
            if not approved:
                status, by, expires = "denied", username, now
            elif len(yes) >= required:
                status, by, expires = "approved", ", ".join(yes), now + window_s
            else:
                status, by, expires = "pending", "", None
            if status != "pending":
                db.execute(
                    "UPDATE approvals SET status=?, by=?, comment=?, decided_at=?, expires=?"
                    " WHERE id=?",
                    (status, by, comment, now, expires, approval_id),
                )
            out = db.execute("SELECT * FROM approvals WHERE id=?", (approval_id,)).fetchone()
            return self._approval(out, db)

        return self._tx(run)

    @staticmethod
    def _votes(db: sqlite3.Connection, approval_id: str) -> list[dict[str, Any]]:
        rows = db.execute(
            "SELECT * FROM approval_votes WHERE approval_id=? ORDER BY at, username",
            (approval_id,),
        ).fetchall()
        out = []
        for r in rows:
            v = dict(r)
            v.pop("approval_id")
            v["groups"] = json.loads(v["groups"])
            v["approve"] = bool(v["approve"])
            v["authenticated"] = bool(v["authenticated"])
            out.append(v)
        return out

    def _approval(self, row: sqlite3.Row, db: sqlite3.Connection | None = None) -> dict[str, Any]:
        d = dict(row)
        d.pop("request", None)
        d["arguments"] = json.loads(d["arguments"])
        d["delivered"] = bool(d["delivered"])
        d["required"] = max(int(d.get("required") or 1), 1)
        d["votes"] = self._votes(db or self.db, d["id"])
        #: who approved, distinct, in order (what the sidecar is told)
        d["approvers"] = [v["username"] for v in d["votes"] if v["approve"]]
        return d

    def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM approvals"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status=?"
            args = (status,)
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY created", args).fetchall()
            return [self._approval(r) for r in rows]

    def approval(self, approval_id: str) -> dict[str, Any] | None:
        """One request with its votes and the namespace of the client that asked."""
        with self._lock:
            row = self.db.execute("SELECT * FROM approvals WHERE id=?", (approval_id,)).fetchone()
            if row is None:
                return None
            out = self._approval(row)
            client = self.db.execute(
                "SELECT namespace FROM clients WHERE id=?", (out["client_id"],)
            ).fetchone()
        out["namespace"] = str(client["namespace"] or "") if client is not None else ""
        return out

    def undelivered_decisions(self) -> list[dict[str, Any]]:
        """Decided approvals not yet handed to their sidecar (a small set, any replica's)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT * FROM approvals WHERE status != 'pending' AND delivered=0"
            ).fetchall()
            return [self._approval(r) for r in rows]

    def mark_delivered(self, approval_id: str) -> None:
        with self._lock:
            self.db.execute("UPDATE approvals SET delivered=1 WHERE id=?", (approval_id,))

    # -- audit -------------------------------------------------------------
    _AUDIT_INSERT = (
        "INSERT OR IGNORE INTO audit(source, seq, hash, time, kind, agent, tenant, server,"
        " tool, decision, rule_id, record, json, received, chain)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    )

    def _audit_schema(self) -> None:
        columns = {r["name"] for r in self.db.execute("PRAGMA table_info(audit)")}
        if "chain" not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another replica was first
                self.db.execute("ALTER TABLE audit ADD COLUMN chain INTEGER NOT NULL DEFAULT 1")

    def add_audit(self, rows: Sequence[AuditRow]) -> list[AuditRow]:
        """Store idempotently, unverified (the distributor's own administrative
        records); returns the rows that were new (for forwarding)."""
        now = self.clock()

        def run(db: sqlite3.Connection) -> list[AuditRow]:
            new = []
            for r in rows:
                cur = db.execute(self._AUDIT_INSERT, r.columns(now))
                if cur.rowcount == 1:
                    new.append(r)
            return new

        return self._tx(run)

    def register_audit_keys(self, source: str, key_ids: Sequence[str], client: str) -> list[str]:
        """Register ``key_ids`` for ``source`` (kept forever); every key of the source.

        A key belongs to one source: one registered for another is refused."""
        now = self.clock()

        def run(db: sqlite3.Connection) -> list[str]:
            for kid in key_ids:
                row = db.execute("SELECT source FROM audit_keys WHERE key_id=?", (kid,)).fetchone()
                if row is not None and row[0] != source:
                    raise StoreError(f"audit key {kid} is registered for another source")
                db.execute(
                    "INSERT OR IGNORE INTO audit_keys(key_id, source, client, registered)"
                    " VALUES (?,?,?,?)",
                    (kid, source, client, now),
                )
            rows = db.execute(
                "SELECT key_id FROM audit_keys WHERE source=? ORDER BY registered, key_id",
                (source,),
            ).fetchall()
            return [str(r[0]) for r in rows]

        return self._tx(run)

    def audit_keys(self, source: str = "") -> list[dict[str, Any]]:
        sql = "SELECT key_id, source, client, registered FROM audit_keys"
        args: tuple[Any, ...] = ()
        if source:
            sql += " WHERE source=?"
            args = (source,)
        with self._lock:
            rows = self.db.execute(sql + " ORDER BY source, registered, key_id", args).fetchall()
        return [dict(r) for r in rows]

    def admit_audit(self, source: str, batch: Sequence[AuditCandidate]) -> AuditIntake:
        """Verify one source's batch against its registered keys and stored chain, store
        what passes (one transaction: replicas admitting the same source serialise)."""
        now = self.clock()

        def run(db: sqlite3.Connection) -> AuditIntake:
            registered = {
                str(r[0])
                for r in db.execute("SELECT key_id FROM audit_keys WHERE source=?", (source,))
            }
            row = db.execute(
                "SELECT chain, seq, hash FROM audit_heads WHERE source=?", (source,)
            ).fetchone()
            if row is None:  # records stored before heads were kept: continue from them
                row = db.execute(
                    "SELECT chain, seq, hash FROM audit WHERE source=? AND hash != ''"
                    " ORDER BY chain DESC, seq DESC LIMIT 1",
                    (source,),
                ).fetchone()
            head = intake.Head(int(row[0]), int(row[1]), str(row[2])) if row else None
            hashes = [c[1].hash for c in batch if c[1].hash]
            stored: set[str] = set()
            for i in range(0, len(hashes), 500):
                part = hashes[i : i + 500]
                marks = ",".join("?" for _ in part)
                stored.update(
                    str(r[0])
                    for r in db.execute(
                        f"SELECT hash FROM audit WHERE source=? AND hash IN ({marks})",  # noqa: S608
                        (source, *part),
                    )
                )
            verdict, rows = admit_rows(batch, head=head, registered=registered, stored=stored)
            new = []
            for r in rows:
                if db.execute(self._AUDIT_INSERT, r.columns(now)).rowcount == 1:
                    new.append(r)
            if verdict.head is not None and verdict.head != head:
                h = verdict.head
                db.execute(
                    "INSERT OR REPLACE INTO audit_heads(source, chain, seq, hash, updated)"
                    " VALUES (?,?,?,?,?)",
                    (source, h.chain, h.seq, h.hash, now),
                )
            return AuditIntake(verdict, new)

        return self._tx(run)

    def audit_chains(self) -> list[dict[str, Any]]:
        """Every verified chain stored: source, chain, records, first and last seq."""
        with self._lock:
            rows = self.db.execute(
                "SELECT source, chain, count(*) AS records, min(seq) AS first_seq,"
                " max(seq) AS last_seq FROM audit WHERE hash != ''"
                " GROUP BY source, chain ORDER BY source, chain"
            ).fetchall()
        return [dict(r) for r in rows]

    def audit_chain(self, source: str, chain: int, after: int, limit: int) -> list[bytes]:
        """The records (serialized ``AuditRecord``) of one chain after seq ``after``."""
        with self._lock:
            rows = self.db.execute(
                "SELECT record FROM audit WHERE source=? AND chain=? AND seq>? AND hash != ''"
                " ORDER BY seq LIMIT ?",
                (source, chain, after, limit),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

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
        """Records matching the filters, oldest first: the first ``limit`` of them, or
        with ``newest`` the last ``limit``."""
        clauses: list[str] = []
        args: list[Any] = []
        for col, value in (
            ("agent", agent),
            ("tool", tool),
            ("decision", decision),
            ("source", source),
            ("kind", kind),
        ):
            if value:
                clauses.append(f"{col}=?")
                args.append(value)
        if since:
            clauses.append("time>=?")
            args.append(since)
        if until:
            clauses.append("time<?")
            args.append(until)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        args.append(limit)
        order = " ORDER BY time, source, seq"
        sql = f"SELECT json FROM audit{where}{order} LIMIT ?"  # noqa: S608
        if newest:
            last = " ORDER BY time DESC, source DESC, seq DESC"
            inner = f"SELECT json, time, source, seq FROM audit{where}{last} LIMIT ?"  # noqa: S608
            sql = f"SELECT json FROM ({inner}){order}"  # noqa: S608
        with self._lock:
            rows = self.db.execute(sql, args).fetchall()
        return [json.loads(r[0]) for r in rows]

    def audit_count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT count(*) FROM audit").fetchone()[0])


class AsyncStore:
    """Runs ``Store`` calls on one worker thread, off the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
