"""An upstream credential read from a file, typically a key of a mounted Kubernetes Secret.

The kubelet updates such mounts by swapping a symlink, so the file's identity
(inode, size, mtime) is checked at most every ``check_interval_s`` and the value
re-read when it changed; the hot path is a clock read. A missing, empty or
oversized file fails closed with :class:`CredentialUnavailable`: the proxy must
answer an error rather than forward without the credential.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.credentials.base import MAX_CREDENTIAL_BYTES, CredentialUnavailable, check_header_name

log = logging.getLogger("sidecar.credentials")


@dataclass(frozen=True, slots=True)
class _Stamp:
    inode: int
    size: int
    mtime_ns: int


class FileCredential:
    """A credential read from a file and re-read when the file changes."""

    def __init__(
        self,
        path: str,
        *,
        header: str = "Authorization",
        scheme: str = "Bearer",
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._header = check_header_name(header)
        self._scheme = scheme
        self._interval = check_interval_s
        self._clock = clock
        self._stamp: _Stamp | None = None
        self._value: str | None = None
        self._checked_at: float | None = None
        #: How many times the file was (re-)read, for tests and metrics.
        self.loads = 0

    async def header(self) -> tuple[str, str]:
        return self._header, self.current()

    async def __call__(self) -> dict[str, str]:
        """The headers to add, as :class:`sidecar.upstream.Upstream` takes them."""
        return {self._header: self.current()}

    async def start(self) -> None:
        """Nothing runs in the background: the file is checked on use."""

    async def aclose(self) -> None:
        return None

    def current(self) -> str:
        """The header value; re-reads the file when its identity changed."""
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._interval:
            self._checked_at = now
            self._reload_if_changed()
        if self._value is None:
            raise CredentialUnavailable(f"the upstream credential file {self.path} is unusable")
        return self._value

    def _reload_if_changed(self) -> None:
        try:
            st = os.stat(self.path)  # follows the Secret mount's ..data symlink
        except OSError as exc:
            self._fail(f"cannot stat: {exc.strerror}")
            return
        stamp = _Stamp(st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp and self._value is not None:
            return
        if st.st_size > MAX_CREDENTIAL_BYTES:
            self._fail(f"larger than {MAX_CREDENTIAL_BYTES} bytes")
            return
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read(MAX_CREDENTIAL_BYTES + 1)
        except OSError as exc:
            self._fail(f"cannot read: {exc.strerror}")
            return
        try:
            secret = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            secret = ""
        if not secret or any(c in secret for c in "\r\n\0"):
            self._fail("empty or not a single line")
            return
        self._stamp = stamp
        self._value = f"{self._scheme} {secret}" if self._scheme else secret
        self.loads += 1
        log.info("upstream credential loaded", extra={"path": self.path, "loads": self.loads})

    def _fail(self, why: str) -> None:
        if self._value is not None or self._stamp is None:
            log.error("upstream credential unusable", extra={"path": self.path, "why": why})
        self._value = None
        self._stamp = None
