"""The bundle-signing keys the agent trusts, re-read while it runs.

The chart mounts the distributor's trust ConfigMap (``keys.pem``, optional) as a
directory. On a first install the agent usually starts before the distributor
has published its key, and the kubelet fills the volume later by swapping the
``..data`` symlink; during a rotation ``keys.pem`` holds the old and the new key.
So every ``--trusted-key`` path (a file, or a directory of ``*.pem``) is read
again every few seconds, and each file may hold several PEM public keys.

Pure decisions, with the I/O at the edges, as elsewhere in the agent:

* :func:`parse_keys` (pure): every Ed25519 public key in one file's bytes;
* :func:`read_raw` (blocking I/O): one path's files and their bytes, which the
  watcher compares with the last poll's, so an unchanged path is not parsed again;
  :func:`parse_raw` / :func:`read_source`: the keys in them;
* :class:`TrustState` (pure): per path, the keys of its last good reading; a
  reading that fails (missing, unreadable, empty, garbage) keeps them and says why;
* :class:`TrustWatcher` (async): polls in a worker thread, hands a changed key
  set to ``apply``, and gives the ``trust`` part of ``/status``.

A public key is no secret, but errors still name files and block positions only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from palisade.bundle import BundleError, TrustedKeys
from palisade.bundle.signing import key_id, load_public_key

log = logging.getLogger(__name__)

#: Any PEM block; the type is checked after, so a private key given by mistake is
#: named as such instead of being skipped. (``injector/trust.py`` splits the same way;
#: daemons may not import each other, and ``palisade.bundle`` has no splitter.)
_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)

WAITING = "waiting for the distributor's signing key: every bundle is refused until it appears"


class KeyFileError(ValueError):
    """One trusted-key file cannot be used (the message names no key bytes)."""


def parse_keys(data: bytes) -> tuple[Ed25519PublicKey, ...]:
    """Every Ed25519 public key in ``data``: PEM blocks in order, or one raw 32-byte key.

    Text between blocks (comments, blank lines) is ignored. Raises
    :class:`KeyFileError` for data with no key, or any block that is not an
    Ed25519 public key: a half-good file is not trusted in part.
    """
    if len(data) == 32 and b"-----BEGIN" not in data:
        return (load_public_key(data),)  # the raw form load_public_key has always taken
    blocks = list(_BLOCK.finditer(data))
    if not blocks:
        raise KeyFileError("no PEM public key" if data.strip() else "empty: no key yet")
    keys: list[Ed25519PublicKey] = []
    for n, m in enumerate(blocks, 1):
        if m.group(1) != b"PUBLIC KEY":
            raise KeyFileError(f"PEM block #{n} is a {m.group(1).decode()}, not a PUBLIC KEY")
        try:
            keys.append(load_public_key(m.group(0) + b"\n"))
        except (BundleError, ValueError) as exc:
            raise KeyFileError(f"PEM block #{n}: {exc}") from None
    return tuple(keys)


@dataclass(frozen=True)
class Reading:
    """One ``--trusted-key`` path as read now."""

    source: Path
    keys: tuple[Ed25519PublicKey, ...] = ()
    problem: str = ""
    """Why this reading is not used ("" when it is); its keys are then empty."""

    @property
    def good(self) -> bool:
        return not self.problem


def _files(source: Path) -> list[Path]:
    """A directory (a mounted ConfigMap or Secret) stands for its ``*.pem`` files."""
    return sorted(source.glob("*.pem")) if source.is_dir() else [source]


def read_raw(source: Path) -> tuple[tuple[tuple[str, bytes], ...], str]:
    """``(files and their bytes, problem)`` for one path; blocking, never raises."""
    try:
        files = _files(source)
    except OSError as exc:
        return (), f"{source}: cannot list ({exc.strerror or exc})"
    if not files:
        return (), f"{source}: no *.pem file yet"
    out: list[tuple[str, bytes]] = []
    for f in files:
        try:
            out.append((str(f), f.read_bytes()))
        except FileNotFoundError:
            return (), f"{f}: does not exist yet"
        except OSError as exc:
            return (), f"{f}: cannot read ({exc.strerror or exc})"
    return tuple(out), ""


def parse_raw(source: Path, raw: tuple[tuple[str, bytes], ...], problem: str = "") -> Reading:
    """The keys of one path's files; the first bad file makes the whole reading bad."""
    if problem:
        return Reading(source, problem=problem)
    keys: list[Ed25519PublicKey] = []
    for name, data in raw:
        try:
            keys.extend(parse_keys(data))
        except KeyFileError as exc:
            return Reading(source, problem=f"{name}: {exc}")
    return Reading(source, tuple(keys))


def read_source(source: Path) -> Reading:
    return parse_raw(source, *read_raw(source))


class TrustState:
    """Per path, the keys of its last good reading, and what is wrong with it now."""

    def __init__(self, sources: Sequence[Path]) -> None:
        self.sources = tuple(sources)
        self.good: dict[Path, tuple[Ed25519PublicKey, ...]] = {}
        self.problems: dict[Path, str] = {s: "not read yet" for s in self.sources}

    def update(self, reading: Reading) -> None:
        if reading.good:
            self.good[reading.source] = reading.keys
            self.problems.pop(reading.source, None)
        else:
            self.problems[reading.source] = reading.problem

    @property
    def keys(self) -> TrustedKeys:
        return TrustedKeys(k for s in self.sources for k in self.good.get(s, ()))

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(key_id(k) for s in self.sources for k in self.good.get(s, ()))

    @property
    def waiting(self) -> bool:
        return not self.key_ids

    def message(self) -> str:
        if not self.sources:
            return "no --trusted-key given: every bundle is refused"
        if self.waiting:
            return WAITING
        if self.problems:
            return "a trusted-key file cannot be read now: its last good keys are kept"
        return ""

    def document(self) -> dict[str, Any]:
        """The ``trust`` part of ``/status``."""
        return {
            "waiting": self.waiting,
            "message": self.message(),
            "keyIds": sorted(self.key_ids),
            "sources": [
                {
                    "path": str(s),
                    "keyIds": sorted({key_id(k) for k in self.good.get(s, ())}),
                    "problem": self.problems.get(s, ""),
                }
                for s in self.sources
            ],
        }


#: Takes a new key set into use (the distribution client's verifier).
Apply = Callable[[TrustedKeys], Awaitable[None]]


class TrustWatcher:
    """Re-reads the trusted-key paths every ``poll_s`` and applies a changed key set."""

    def __init__(self, sources: Sequence[Path], *, poll_s: float = 5.0) -> None:
        self.state = TrustState(sources)
        self.poll_s = poll_s
        self.checks = 0
        self.changes = 0
        self._raw: dict[Path, tuple[tuple[tuple[str, bytes], ...], str]] = {}
        self._apply: Apply | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def load(self) -> TrustedKeys:
        """The first reading, at startup (blocking): a missing key is no error."""
        self._read_all()
        ids = sorted(self.state.key_ids)
        if self.state.waiting:
            log.warning(
                WAITING,
                extra={"sources": [str(s) for s in self.state.sources], **self._problems()},
            )
        else:
            log.info("trusted signing keys loaded", extra={"key_ids": ids, **self._problems()})
        return self.state.keys

    def _problems(self) -> dict[str, Any]:
        return {"problems": dict(sorted((str(k), v) for k, v in self.state.problems.items()))}

    def _read_all(self) -> bool:
        """Read every path; returns whether anything read differs from last time."""
        changed = False
        for source in self.state.sources:
            raw = read_raw(source)
            if self._raw.get(source) == raw:
                continue
            changed = True
            self._raw[source] = raw
            before = self.state.problems.get(source, "")
            reading = parse_raw(source, *raw)
            self.state.update(reading)
            if reading.problem and reading.problem != before:
                kept = bool(self.state.good.get(source))
                log.warning(
                    "trusted-key file not usable: "
                    + ("keeping its last good keys" if kept else "no key from it yet"),
                    extra={"source": str(source), "problem": reading.problem},
                )
        return changed

    async def check(self) -> bool:
        """One poll; returns whether the trusted key set changed (and was applied)."""
        before = self.state.key_ids
        self.checks += 1
        if not await asyncio.to_thread(self._read_all):
            return False
        after = self.state.key_ids
        if after == before:
            return False
        self.changes += 1
        log.info(
            "trusted signing keys changed",
            extra={
                "key_ids": sorted(after),
                "added": sorted(after - before),
                "removed": sorted(before - after),
            },
        )
        if self._apply is not None:
            await self._apply(self.state.keys)
        return True

    async def start(self, apply: Apply) -> None:
        self._apply = apply
        if self.state.sources and self.poll_s > 0:
            self._task = asyncio.create_task(self._run(), name="trusted-key-watch")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_s)
            if self._stop.is_set():
                return
            try:
                await self.check()
            except Exception:  # the watch must go on; the last good keys stay
                log.exception("trusted-key check failed")

    def document(self) -> dict[str, Any]:
        return {**self.state.document(), "pollSeconds": self.poll_s, "changes": self.changes}
