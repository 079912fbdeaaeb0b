"""The audit writer: one signed, chained JSON Lines record per decision, on local disk.

Concurrency: placing a record in the chain and writing it happen under one
lock, so concurrent coroutines (or threads) never interleave lines and the
chain order is the file order. ``append`` (async) is a group commit: the
records of one event-loop turn are written with a single ``write(2)`` on an
``O_APPEND`` descriptor and only the last is signed (the chain covers the
rest); callers resume only once their batch is written, so a crash of the
process never loses an acknowledged record, and none is unsigned.
``append_sync`` writes and signs one record at once.

Durability (``fsync``):
  * ``always``: ``append`` returns only after an ``fsync`` covering the record.
    Concurrent callers share one ``fsync`` (group commit), run in a thread.
  * ``interval`` (default): a background task fsyncs every
    ``fsync_interval_s`` when something was written; a power loss can cost at
    most that window, a process crash nothing.
  * ``never``: left to the OS (tests, benchmarks).
Rotation and ``close`` always fsync.

Group commit window (``append``): after the first record of a batch, the
flush waits while the event loop keeps delivering requests that join it: it
runs once the batch has not grown for ``quiet_turns`` loop turns, reaches
``max_batch`` records, or ``batch_turns`` turns have passed. Requests already
delivered by gRPC are what fills the batch, so a lone caller waits only a few
empty turns (microseconds); under load a batch of many records costs one
signature and one ``write(2)``. ``sign_each=True`` signs every record anyway
(for consumers that must check records one by one; it costs the signing
savings, not the single write).

Rotation: when the active file reaches ``max_bytes`` it is fsynced, renamed
to the next numbered sibling and a fresh file opened; the chain simply
continues (the first record of the new file points at the last of the old).
Nothing is deleted unless :meth:`prune_shipped` is called, and then only files
whose records are all at or below the shipping cursor.

Restart: :meth:`open` resumes ``seq`` and ``prev_hash`` from the last record
on disk. A torn last line (a write cut by a crash or power loss) is moved to a
``.torn-<time>`` file and a ``recovery`` record says so.

Shipping: records stay on disk until acknowledged. :meth:`read_after` gives
records after a seq, :meth:`mark_shipped` persists the acknowledged seq
(atomically, fsynced) and :attr:`shipped_through` reads it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from palisade.audit import canonical, files
from palisade.audit.keys import Signer, registration_proof
from palisade.audit.record import Chained, Entry, chain, content_of, line_of, sign
from palisade.audit.redact import Redactor

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]


class AuditError(RuntimeError):
    """The audit log cannot be opened, resumed or written. Callers must fail closed."""


#: Entry fields of text, made storable by :meth:`AuditWriter._prepare`.
_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Entry) if f.type in ("str", str))


def _storable(value: object) -> bool:
    return not isinstance(value, str) or canonical.storable(value)


def _plain(value: object) -> str:
    return value if isinstance(value, str) else ""


def _fits(value: Any) -> bool:
    """Whether a normalised value serialises as it is (no lone surrogates, sane ints)."""
    try:
        canonical.dumps(value)
    except canonical.CanonicalError:
        return False
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class _Prepared:
    entry: Entry
    redacted: Any
    digest: str
    details: dict[str, Any]


@functools.lru_cache(maxsize=256)
def _redactor(names: frozenset[str]) -> Redactor:
    return Redactor(names)


class AuditWriter:
    """Appends sealed records to ``path``; see the module docstring for guarantees."""

    def __init__(
        self,
        path: Path | str,
        signer: Signer,
        *,
        source: str = "",
        max_bytes: int = 64 * 2**20,
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 0.1,
        clock: Any = time.time,
        batch_turns: int = 64,
        quiet_turns: int = 8,
        max_batch: int = 256,
        sign_each: bool = False,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        self.path = Path(path)
        self._signer = signer
        self._source = source
        self._max_bytes = max(1, int(max_bytes))
        self._fsync = fsync
        self._interval = fsync_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._fsync_lock = threading.Lock()
        self._fd = -1
        self._size = 0
        self._seq = 0
        self._head = ""
        self._written_seq = 0
        self._synced_seq = 0
        self._task: asyncio.Task[None] | None = None
        self._pending: list[Chained] = []
        #: one future per caller waiting on the pending batch; None: no flush scheduled
        self._waiters: list[asyncio.Future[None]] | None = None
        self._batch_error: AuditError | None = None
        self._batch_turns = batch_turns
        self._quiet_turns = quiet_turns
        self._max_batch = max(1, max_batch)
        self._sign_each = sign_each

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Open the active file and resume the chain from disk. Idempotent."""
        if self._fd >= 0:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self._repair_torn_tail()
        self._resume()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"cannot open audit file {self.path}: {exc.strerror}") from exc
        self._size = os.fstat(self._fd).st_size
        self._written_seq = self._synced_seq = self._seq
        if torn is not None:
            self.append_sync(
                Entry(kind="recovery", reason="torn last line moved aside", details=torn)
            )

    async def start(self) -> None:
        """Open, and run the interval fsync task on the current loop."""
        self.open()
        if self._fsync == "interval" and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._fsync_loop())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._fd < 0:
                return
            with contextlib.suppress(AuditError):
                self._flush_locked()
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._synced_seq = self._written_seq

    async def __aenter__(self) -> AuditWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- state -------------------------------------------------------------------

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record written."""
        return self._seq, self._head

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    @property
    def source(self) -> str:
        return self._source

    def key_proof(self) -> tuple[str, str, bytes]:
        """(key id, source, proof): what registers this writer's key with a distributor
        (``palisade.v1.AuditKey``); the proof shows the private key is held here."""
        return self._signer.key_id, self._source, registration_proof(self._signer, self._source)

    # -- writing -----------------------------------------------------------------

    def _prepare(self, entry: Entry, secret_names: Iterable[str]) -> _Prepared:
        """The entry with storable text, its redacted arguments, their digest and
        details, all normalised (no lock needed).

        Whatever a client sent becomes a record: text without a UTF-8 form (lone
        surrogates) is stored with U+FFFD in its place (:func:`canonical.text`) and
        ``details.replaced_text`` names the fields where that happened, while the
        arguments' digest is taken over the arguments exactly as given.
        """
        redactor = _redactor(frozenset(secret_names))
        replaced = [name for name in _TEXT_FIELDS if not _storable(getattr(entry, name))]
        if replaced:
            fixed: dict[str, Any] = {n: canonical.text(getattr(entry, n)) for n in replaced}
            entry = dataclasses.replace(entry, **fixed)
        try:
            details = canonical.normalize(dict(entry.details), exact=True)
            if not _fits(details):
                details = canonical.normalize(details)
                replaced.append("details")
                if not _fits(details):
                    raise canonical.CanonicalError("the details have no JSON form")
        except canonical.CanonicalError as exc:
            details = {"details_error": str(exc)}
        try:
            arguments = canonical.normalize(dict(entry.arguments), exact=True)
            try:
                body = canonical.dumps(arguments)
            except canonical.CanonicalError:
                body = canonical.exact_bytes(arguments)  # still refuses what is not JSON
                arguments = canonical.normalize(arguments)
                replaced.append("arguments")
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            redacted = redactor.redact(arguments)
        except canonical.CanonicalError as exc:
            digest, redacted = "", {}
            details["arguments_error"] = str(exc)
        if replaced:
            details["replaced_text"] = replaced
        return _Prepared(entry, redacted, digest, details)

    def _chain_locked(self, prepared: _Prepared) -> Chained:
        if self._fd < 0:
            raise AuditError("audit writer is not open")
        content = content_of(
            prepared.entry,
            time_s=self._clock(),
            source=self._source,
            redacted_arguments=prepared.redacted,
            arguments_digest=prepared.digest,
            details=prepared.details,
        )
        try:
            chained = chain(
                content, seq=self._seq + 1, prev_hash=self._head, key_id=self._signer.key_id
            )
        except canonical.CanonicalError as exc:
            # Never expected (text and values were made storable above), but should a
            # caller pass a non-JSON value in a field, a record of that beats none.
            e = prepared.entry
            stub = Entry(
                decision=_plain(e.decision),
                rule_id=_plain(e.rule_id),
                kind=_plain(e.kind) or "decision",
                reason="the record could not be stored as given",
            )
            content = content_of(
                stub,
                time_s=self._clock(),
                source=self._source,
                redacted_arguments={},
                arguments_digest="",
                details={"record_error": canonical.text(str(exc))[:200]},
            )
            chained = chain(
                content, seq=self._seq + 1, prev_hash=self._head, key_id=self._signer.key_id
            )
        self._seq = chained.record["seq"]
        self._head = chained.digest
        self._pending.append(chained)
        return chained

    def append_sync(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Seal, sign and write ``entry`` now; returns the record. Thread-safe; never awaits.

        Records of a pending batch (see :meth:`append`) are written first, so the
        file order stays the chain order.
        """
        prepared = self._prepare(entry, secret_names)
        with self._lock:
            chained = self._chain_locked(prepared)
            self._flush_locked()
        return chained.record

    async def append(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Append as part of a batch: group commit for concurrent callers.

        Every record appended during one turn of the event loop is written by a
        single ``write(2)`` at the end of that turn, and only the batch's last
        record is signed; the chain links the others to it, so the one
        signature covers them all. The caller resumes only after the batch is
        on disk (and, with ``fsync="always"``, fsynced): nothing acknowledged
        is ever unwritten or unsigned. Alone, a caller gets a batch of one.
        Raises :class:`AuditError` when the batch cannot be written.
        """
        prepared = self._prepare(entry, secret_names)
        loop = asyncio.get_running_loop()
        # A future per caller, so a cancelled caller cancels only its own wait:
        # its record is still written with the batch.
        done: asyncio.Future[None] = loop.create_future()
        with self._lock:
            chained = self._chain_locked(prepared)
            if self._waiters is None:
                self._waiters = []
                loop.call_soon(self._flush_after, loop, self._batch_turns, 0, 0)
            self._waiters.append(done)
        await done
        if self._fsync == "always":
            await self.durable(chained.record["seq"])
        return chained.record

    def _flush_after(
        self, loop: asyncio.AbstractEventLoop, turns: int, quiet: int, seen: int
    ) -> None:
        # Group commit window: let the event loop run more turns while requests
        # keep joining the batch (they were already delivered, so this costs them
        # no latency); flush once the batch stops growing for a few turns, grows
        # to its limit, or the turn budget is spent. A lone caller waits only the
        # few quiet turns (microseconds).
        size = len(self._pending)
        quiet = quiet + 1 if size == seen else 0
        if turns <= 0 or quiet >= self._quiet_turns or size >= self._max_batch:
            self._flush_batch()
        else:
            loop.call_soon(self._flush_after, loop, turns - 1, quiet, size)

    def _flush_batch(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters or [], None
            error, self._batch_error = self._batch_error, None
            try:
                self._flush_locked()
            except AuditError as exc:
                error = exc
                self._batch_error = None
            except Exception as exc:  # never leave callers waiting on a batch
                error = AuditError(f"audit batch failed: {type(exc).__name__}: {exc}")
                self._batch_error = None
        for done in waiters:
            if done.done():  # the caller was cancelled
                continue
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(None)

    def _flush_locked(self) -> None:
        """Sign the last pending record and write all pending lines in one write."""
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        last = batch[-1]
        lines = [line_of(c, sign(c, self._signer) if self._sign_each else "") for c in batch[:-1]]
        lines.append(line_of(last, sign(last, self._signer)))
        try:
            self._write(b"".join(lines))
        except AuditError as exc:
            # nothing of this batch is on disk: the chain goes back to before it
            self._seq = batch[0].record["seq"] - 1
            self._head = batch[0].record["prev_hash"]
            if self._waiters is not None:
                self._batch_error = exc
            raise
        self._written_seq = last.record["seq"]
        if self._size >= self._max_bytes:
            try:
                self._rotate()
            except OSError:
                # the records are written; keep appending and try again next time
                log.exception("audit file rotation failed", extra={"file": str(self.path)})

    @property
    def waits_for_fsync(self) -> bool:
        """True when callers must await :meth:`durable` before acknowledging a record."""
        return self._fsync == "always"

    async def durable(self, seq: int) -> None:
        """Wait until records up to ``seq`` are fsynced (group commit, in a thread)."""
        if self._synced_seq < seq:
            await asyncio.get_running_loop().run_in_executor(None, self.sync_through, seq)

    def sync_through(self, seq: int) -> None:
        """Block until records up to ``seq`` are fsynced (group commit)."""
        with self._fsync_lock:
            if self._synced_seq >= seq:
                return
            with self._lock:
                if self._fd < 0:
                    return
                fd = os.dup(self._fd)
                target = self._written_seq
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._synced_seq = max(self._synced_seq, target)

    def _write(self, line: bytes) -> None:
        view = memoryview(line)
        start = self._size
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._size += n
        except OSError as exc:
            # leave no partial line behind: the record was not written at all
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            self._size = start
            raise AuditError(f"cannot write audit record to {self.path}: {exc.strerror}") from exc

    def _rotate(self) -> None:
        # Rename while the file is still open, then switch descriptors: if any
        # step fails, appends continue on a descriptor that is still valid, so
        # a failed rotation never loses or blocks a record.
        os.fsync(self._fd)
        rotated = files.rotated_files(self.path)
        index = rotated[-1][0] + 1 if rotated else 1
        target = self.path.with_name(f"{self.path.name}.{index:06d}")
        os.rename(self.path, target)
        new_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        old_fd, self._fd = self._fd, new_fd
        os.close(old_fd)
        files.fsync_dir(self.path.parent)
        self._size = 0
        self._synced_seq = self._written_seq
        log.info("audit file rotated", extra={"file": str(target), "seq": self._seq})

    async def _fsync_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._interval)
            if self._written_seq > self._synced_seq:
                try:
                    await loop.run_in_executor(None, self.sync_through, self._written_seq)
                except OSError:
                    log.exception("audit fsync failed")

    # -- restart -----------------------------------------------------------------

    def _repair_torn_tail(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        data_size = self.path.stat().st_size
        if data_size == 0:
            return None
        with self.path.open("rb+") as f:
            f.seek(data_size - 1)
            if f.read(1) == b"\n":
                return None
            f.seek(0)
            data = f.read()
            cut = data.rfind(b"\n") + 1
            aside = self.path.with_name(f"{self.path.name}.torn-{int(time.time())}")
            aside.write_bytes(data[cut:])
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
        log.warning(
            "audit file had a torn last line; moved aside",
            extra={"file": str(self.path), "bytes": data_size - cut, "saved_to": str(aside)},
        )
        return {"torn_bytes": data_size - cut, "saved_to": aside.name}

    def _resume(self) -> None:
        for candidate in reversed(files.chain_files(self.path)):
            line = files.last_line(candidate)
            if line is None:
                continue
            try:
                last = json.loads(line)
                self._seq = int(last["seq"])
                self._head = str(last["hash"])
            except (ValueError, KeyError, TypeError) as exc:
                raise AuditError(
                    f"cannot resume the audit chain: the last record of {candidate} is not a "
                    "valid record; run `palisade audit verify` and move the file aside"
                ) from exc
            return

    # -- shipping ----------------------------------------------------------------

    @property
    def _cursor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".shipped")

    @property
    def shipped_through(self) -> int:
        """The highest seq acknowledged by the receiver (0 when none)."""
        try:
            return int(json.loads(self._cursor_path.read_text())["seq"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"shipping cursor {self._cursor_path} is unreadable") from exc

    def mark_shipped(self, seq: int) -> None:
        """Persist that every record up to ``seq`` was acknowledged. Never moves back."""
        if seq > self._seq:
            raise ValueError(f"cannot mark seq {seq} shipped: the chain ends at {self._seq}")
        if seq <= self.shipped_through:
            return
        tmp = self._cursor_path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump({"seq": seq}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._cursor_path)
        files.fsync_dir(self.path.parent)

    def read_after(self, seq: int, limit: int = 1000) -> list[dict[str, Any]]:
        """Records with seq greater than ``seq``, in chain order: ``limit`` of them, plus
        the rest of the group commit the last one belongs to, so that every
        shipment ends with a signed record and can be verified on its own."""
        out: list[dict[str, Any]] = []
        for path in files.chain_files(self.path):
            last = files.last_line(path)
            if last is None or int(json.loads(last)["seq"]) <= seq:
                continue
            for _, record in files.iter_records(path):
                if int(record["seq"]) > seq:
                    out.append(record)
                    # never end a shipment inside a group commit: its signature
                    # is on the record that closes it
                    if len(out) >= limit and record.get("signature"):
                        return out
        return out

    def prune_shipped(self) -> list[Path]:
        """Delete rotated files whose every record is shipped; returns what was deleted."""
        through = self.shipped_through
        removed: list[Path] = []
        for _, path in files.rotated_files(self.path):
            last = files.last_line(path)
            if last is not None and int(json.loads(last)["seq"]) > through:
                break
            path.unlink()
            removed.append(path)
        return removed
