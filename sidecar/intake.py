"""Bundle intake from a file or directory: watched, verified, activated atomically, kept on disk.

Three jobs, three places (as in OPA): the *format* lives in :mod:`palisade.bundle`
(parse, validate, sign, verify); this module is the *lifecycle* for a local path:

1. :meth:`BundleIntake.poll` reads the path when its content digest changed
   (mtime polling would miss same-second rewrites; hashing a few KiB is cheap);
2. with trusted keys it requires a signed envelope (``palisade.v1.SignedBundle``)
   and verifies it; without keys it accepts plain YAML only when unsigned bundles
   were explicitly allowed (development), saying so in the log;
3. compiles the engine (:func:`palisade.policy.engine.compile_bundle`) and hands
   the new :class:`~sidecar.policy.PolicySnapshot` to ``activate`` (one reference
   swap); a revision older than the active one is refused;
4. writes the bytes it activated to ``state_dir`` atomically (last good), and on
   start-up falls back to that copy when the path is missing or broken.

Any failure keeps the current bundle active and is counted and logged.

Bundles pushed by the distributor (:mod:`sidecar.fleet`) take the same road
after the distribution client verified them with the same
:func:`~palisade.bundle.signing.verify_bundle`: :meth:`BundleIntake.activate_verified`
runs steps 3 and 4 (compile with the shared budget state, refuse an older
revision, swap, keep as last good). Such an intake has no path to watch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from palisade.bundle.canonical import bundle_digest
from palisade.bundle.errors import BundleError
from palisade.bundle.load import load_bytes, load_file
from palisade.bundle.schema import Bundle
from palisade.bundle.signing import TrustedKeys, from_bytes, verify_bundle
from palisade.policy.budgets import BudgetState
from palisade.policy.engine import Engine, compile_bundle
from palisade.policy.guard import Guard
from sidecar.budget_journal import open_journal
from sidecar.policy import PolicySnapshot, ToolFacts

log = logging.getLogger(__name__)

SIGNED_SUFFIXES = (".signed", ".pb", ".bundle")
YAML_SUFFIXES = (".yaml", ".yml", ".json")
LAST_GOOD_SIGNED = "last-good.signed"
LAST_GOOD_YAML = "last-good.yaml"


class IntakeError(Exception):
    """A bundle was refused; the active one stays."""


@dataclass(frozen=True, slots=True)
class Loaded:
    bundle: Bundle
    revision: int
    digest: str
    raw: bytes
    signed: bool


def snapshot_of(engine: Engine, server_name: str) -> PolicySnapshot:
    """The proxy's view of a compiled bundle: the engine behind the core's fail-closed
    :class:`Guard` (time budget, engine errors), plus this server's tool facts."""
    server = engine.bundle.server(server_name)
    tools = {
        t.name: ToolFacts(bool(t.untrusted_output), frozenset(t.secret_arguments))
        for t in (server.tools if server else ())
    }
    return PolicySnapshot(
        engine=Guard(engine, clock=engine.clock, state=engine.state),
        revision=engine.revision,
        digest=engine.digest,
        name=engine.bundle.name,
        tools=tools,
        compiled=engine,
    )


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            f for f in path.iterdir() if f.is_file() and f.suffix in SIGNED_SUFFIXES + YAML_SUFFIXES
        )
    return [path]


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class BundleIntake:
    """Watches one path and activates what it finds there, if it verifies."""

    def __init__(
        self,
        path: Path | None,
        *,
        server_name: str,
        activate: Callable[[PolicySnapshot], None],
        trusted: TrustedKeys | None = None,
        allow_unsigned: bool = False,
        state_dir: Path | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        if trusted is None and not allow_unsigned:
            raise ValueError(
                "give trusted keys, or allow unsigned bundles explicitly (development)"
            )
        self.path = path
        self._server = server_name
        self._activate = activate
        self._trusted = trusted if trusted is not None and len(trusted) else None
        self._allow_unsigned = allow_unsigned
        self._state_dir = state_dir
        self._on_error = on_error
        self._seen = ""
        self._active: Loaded | None = None
        self._unsigned_revision = 0
        #: One budget state across bundle swaps: a new revision does not reset budgets,
        #: and with a state dir a restart does not either (:mod:`sidecar.budget_journal`).
        self._budgets = BudgetState()
        self.budget_journal = (
            open_journal(self._budgets, state_dir) if state_dir is not None else None
        )
        self.last_error = ""

    @property
    def active_revision(self) -> int | None:
        return self._active.revision if self._active else None

    def start(self) -> bool:
        """First activation: the path, else the last good copy. True when something is active."""
        if self.poll():
            return True
        for name in (LAST_GOOD_SIGNED, LAST_GOOD_YAML):
            if self._state_dir is None or not (self._state_dir / name).is_file():
                continue
            try:
                raw = (self._state_dir / name).read_bytes()
                loaded = self._parse(raw, name)
                self._install(loaded, persist=False)
                log.warning(
                    "bundle path unusable; running the last good bundle",
                    extra={"revision": loaded.revision, "error": self.last_error},
                )
                return True
            except (BundleError, IntakeError, OSError) as exc:
                self._fail(f"last good bundle unusable: {exc}")
        return self._active is not None

    def poll(self) -> bool:
        """Check the path once; True when a new bundle was activated."""
        if self.path is None:
            return False
        try:
            files = _files_of(self.path)
            blobs = [(f, f.read_bytes()) for f in files]
        except OSError as exc:
            self._fail(f"cannot read {self.path}: {exc}")
            return False
        h = hashlib.sha256()
        for f, data in blobs:
            h.update(f.name.encode() + b"\0" + hashlib.sha256(data).digest())
        seen = h.hexdigest()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            loaded = self._read(blobs)
            self._install(loaded, persist=True)
        except (BundleError, IntakeError) as exc:
            self._fail(str(exc))
            return False
        return True

    def activate_verified(self, bundle: Bundle, revision: int, digest: str, raw: bytes) -> None:
        """Activate a bundle whose signature was already verified (a distributor push).

        The same compile, revision check, swap and last-good copy as a file; raises
        :class:`IntakeError` (and the active bundle stays) when it is refused.
        """
        if self._trusted is None:
            raise IntakeError("a signed bundle needs trusted keys (--trusted-key) to verify it")
        loaded = Loaded(bundle, revision, digest, raw, signed=True)
        cur = self._active
        if cur is not None and cur.signed and (cur.revision, cur.digest) == (revision, digest):
            return
        try:
            self._install(loaded, persist=True)
        except Exception as exc:
            self._fail(str(exc))
            raise IntakeError(str(exc)) from None

    def _read(self, blobs: list[tuple[Path, bytes]]) -> Loaded:
        signed = [b for b in blobs if b[0].suffix in SIGNED_SUFFIXES]
        if signed:
            if len(signed) > 1:
                raise IntakeError(f"{self.path} holds more than one signed bundle")
            return self._parse(signed[0][1], signed[0][0].name)
        if self.path is not None and self.path.is_dir():
            if self._trusted is not None or not self._allow_unsigned:
                raise IntakeError("unsigned bundles are not accepted (trusted keys are configured)")
            bundle = load_file(self.path)
            raw = "\n---\n".join(b.decode("utf-8") for _, b in blobs).encode("utf-8")
            return self._unsigned(bundle, raw)
        return self._parse(blobs[0][1], blobs[0][0].name)

    def _parse(self, raw: bytes, name: str) -> Loaded:
        if name.endswith(SIGNED_SUFFIXES):
            if self._trusted is None:
                raise IntakeError("a signed bundle needs trusted keys (--trusted-key) to verify it")
            v = verify_bundle(from_bytes(raw), self._trusted)
            return Loaded(v.bundle, v.revision, v.digest, raw, signed=True)
        if self._trusted is not None or not self._allow_unsigned:
            raise IntakeError("unsigned bundles are not accepted (trusted keys are configured)")
        return self._unsigned(load_bytes(raw, name), raw)

    def _unsigned(self, bundle: Bundle, raw: bytes) -> Loaded:
        digest = bundle_digest(bundle)
        if self._active is not None and self._active.digest == digest:
            return self._active
        self._unsigned_revision += 1
        return Loaded(bundle, self._unsigned_revision, digest, raw, signed=False)

    def _install(self, loaded: Loaded, *, persist: bool) -> None:
        if loaded is self._active:
            return
        cur = self._active
        if loaded.signed and cur is not None and cur.signed and loaded.revision < cur.revision:
            raise IntakeError(
                f"revision {loaded.revision} is older than the active revision {cur.revision}"
            )
        engine = compile_bundle(
            loaded.bundle, revision=loaded.revision, digest=loaded.digest, state=self._budgets
        )
        if engine.bundle.server(self._server) is None:
            log.warning(
                "the bundle does not register this server; every call will be denied",
                extra={"server": self._server, "bundle": loaded.bundle.name},
            )
        try:
            self._activate(snapshot_of(engine, self._server))
        except Exception as exc:  # e.g. two agents claiming one identity
            raise IntakeError(f"activation failed: {exc}") from None
        if not loaded.signed:
            log.warning(
                "UNSIGNED bundle activated (development only)",
                extra={"bundle": loaded.bundle.name, "digest": loaded.digest},
            )
        self._active = loaded
        self.last_error = ""
        if persist and self._state_dir is not None:
            name = LAST_GOOD_SIGNED if loaded.signed else LAST_GOOD_YAML
            try:
                _atomic_write(self._state_dir / name, loaded.raw)
            except OSError as exc:
                log.error("cannot keep the last good bundle: %s", exc)

    def _fail(self, error: str) -> None:
        self.last_error = error
        log.error("bundle refused; keeping the active one", extra={"error": error})
        if self._on_error is not None:
            self._on_error(error)
