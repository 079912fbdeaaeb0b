"""The audit writer: one signed, chained JSON Lines record per decision, on local disk.

Concurrency: sealing and writing a record happen under one lock with no
``await`` in between, so concurrent coroutines (or threads) never interleave
lines and the chain order is the file order. Each record goes to the file
with a single ``write(2)`` on an ``O_APPEND`` descriptor before ``append``
returns, so a crash of the process never loses an acknowledged record.

Durability (``fsync``):
  * ``always``: ``append`` returns only after an ``fsync`` covering the record.
    Concurrent callers share one ``fsync`` (group commit), run in a thread.
  * ``interval`` (default): a background task fsyncs every
    ``fsync_interval_s`` when something was written; a power loss can cost at
    most that window, a process crash nothing.
  * ``never``: left to the OS (tests, benchmarks).
Rotation and ``close`` always fsync.

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
from palisade.audit.keys import Signer
from palisade.audit.record import Entry, content_of, seal
from palisade.audit.redact import Redactor

log = logging.getLogger(__name__)

FsyncPolicy = Literal["always", "interval", "never"]


class AuditError(RuntimeError):
    """The audit log cannot be opened, resumed or written. Callers must fail closed."""


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

    # -- writing -----------------------------------------------------------------

    def append_sync(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Seal ``entry`` and write it; returns the record. Thread-safe; never awaits."""
        redactor = _redactor(frozenset(secret_names))
        try:
            details = canonical.normalize(dict(entry.details))
        except canonical.CanonicalError as exc:
            details = {"details_error": str(exc)}
        try:
            arguments = canonical.normalize(dict(entry.arguments))
            digest = "sha256:" + hashlib.sha256(canonical.dumps(arguments)).hexdigest()
            redacted = redactor.redact(arguments)
        except canonical.CanonicalError as exc:
            digest, redacted = "", {}
            details["arguments_error"] = str(exc)
        with self._lock:
            if self._fd < 0:
                raise AuditError("audit writer is not open")
            content = content_of(
                entry,
                time_s=self._clock(),
                source=self._source,
                redacted_arguments=redacted,
                arguments_digest=digest,
                details=details,
            )
            record, line = seal(
                content, seq=self._seq + 1, prev_hash=self._head, signer=self._signer
            )
            self._write(line)
            self._seq = record["seq"]
            self._head = record["hash"]
            self._written_seq = self._seq
            if self._size >= self._max_bytes:
                self._rotate()
        return record

    async def append(self, entry: Entry, secret_names: Iterable[str] = ()) -> dict[str, Any]:
        """Like :meth:`append_sync`; with ``fsync="always"`` also waits for durability."""
        record = self.append_sync(entry, secret_names)
        if self._fsync == "always":
            await self.durable(record["seq"])
        return record

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
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        rotated = files.rotated_files(self.path)
        index = rotated[-1][0] + 1 if rotated else 1
        target = self.path.with_name(f"{self.path.name}.{index:06d}")
        os.rename(self.path, target)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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
        """Up to ``limit`` records with seq greater than ``seq``, in chain order."""
        out: list[dict[str, Any]] = []
        for path in files.chain_files(self.path):
            last = files.last_line(path)
            if last is None or int(json.loads(last)["seq"]) <= seq:
                continue
            for _, record in files.iter_records(path):
                if int(record["seq"]) > seq:
                    out.append(record)
                    if len(out) >= limit:
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
